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
	// smaps, not maps: a read-only mapping may hold pages the process wrote before making them
	// read-only (relocations of a position-independent binary: .data.rel.ro); dropping those would
	// bring back the unrelocated file. Only mappings with no anonymous page are released.
	smaps, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	defer func() { _ = smaps.Close() }()
	type mapping struct {
		start, end uint64
		ours       bool
		anon       bool
	}
	var all []mapping
	sc := bufio.NewScanner(smaps)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			// address perms offset dev inode [path]
			lo, hi, _ := strings.Cut(f[0], "-")
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			all = append(all, mapping{start: start, end: end,
				ours: !strings.Contains(f[1], "w") && f[4] == strconv.FormatUint(st.Ino, 10)})
			continue
		}
		if len(f) >= 2 && f[0] == "Anonymous:" && len(all) > 0 && f[1] != "0" {
			all[len(all)-1].anon = true
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	var released int64
	for _, m := range all {
		if !m.ours || m.anon {
			continue
		}
		// Random: no fault-around (whole folios) and no readahead on later faults; then drop what
		// is mapped now (the pages come back from the page cache when touched).
		for _, advice := range []int{syscall.MADV_RANDOM, syscall.MADV_DONTNEED} {
			if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(m.start), uintptr(m.end-m.start), uintptr(advice)); errno != 0 {
				return released, fmt.Errorf("madvise %x-%x: %w", m.start, m.end, errno)
			}
		}
		released += int64(m.end - m.start)
	}
	return released, nil
}
