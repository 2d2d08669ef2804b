package memlimit

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ReleaseBinaryPages drops the pages of the process's own binary that are mapped read-only (code,
// read-only data, the function tables) and has the kernel map them back one page at a time, as
// they are used. The container is charged for every page of the binary its process has mapped, and
// on kernels that map whole page-cache folios on a fault (Linux 6.18 here, a binary just written
// or extracted from an image) one fault maps up to megabytes around the page that was needed:
// code that never runs (the offline CLI's validators, most of the protos) was mapped with the code
// that did. Writable mappings are left alone. Called once at start-up, before the manager starts.
// It returns how many bytes of mappings it released.
func ReleaseBinaryPages() (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &st); err != nil {
		return 0, fmt.Errorf("stat /proc/self/exe: %w", err)
	}
	maps, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer func() { _ = maps.Close() }()
	var released int64
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		// address perms offset dev inode path
		f := strings.Fields(sc.Text())
		if len(f) < 6 || strings.Contains(f[1], "w") || f[4] != strconv.FormatUint(st.Ino, 10) {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, err := strconv.ParseUint(lo, 16, 64)
		if err != nil {
			return released, fmt.Errorf("/proc/self/maps %q: %w", f[0], err)
		}
		end, err := strconv.ParseUint(hi, 16, 64)
		if err != nil {
			return released, fmt.Errorf("/proc/self/maps %q: %w", f[0], err)
		}
		// Random: no fault-around (whole folios) and no readahead on later faults; then drop what
		// is mapped now (a read-only private file mapping holds no data of its own: the pages come
		// back from the page cache when touched).
		for _, advice := range []int{syscall.MADV_RANDOM, syscall.MADV_DONTNEED} {
			if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), uintptr(advice)); errno != 0 {
				return released, fmt.Errorf("madvise %s: %w", f[0], errno)
			}
		}
		released += int64(end - start)
	}
	return released, sc.Err()
}
