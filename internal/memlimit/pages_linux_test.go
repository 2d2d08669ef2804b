package memlimit

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// binaryMappings reads /proc/self/smaps: the resident bytes of the binary's read-only mappings, and
// whether each of them is marked for random reads (VmFlags rr).
func binaryMappings(t *testing.T) (rss int64, random []bool) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &st); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	ino := strconv.FormatUint(st.Ino, 10)
	mine := false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			mine = f[4] == ino && !strings.Contains(f[1], "w")
		case mine && len(f) == 3 && f[0] == "Rss:":
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			rss += kb << 10
		case mine && len(f) > 0 && f[0] == "VmFlags:":
			random = append(random, strings.Contains(l, " rr"))
		}
	}
	return rss, random
}

func TestReleaseBinaryPages(t *testing.T) {
	before, random := binaryMappings(t)
	if len(random) == 0 || before == 0 {
		t.Fatalf("no resident read-only mapping of the binary in /proc/self/smaps (%d mappings, %d bytes)", len(random), before)
	}
	released, err := ReleaseBinaryPages()
	if err != nil {
		t.Fatal(err)
	}
	after, random := binaryMappings(t)
	t.Logf("binary's read-only pages resident: %d KiB before, %d KiB after (%d KiB of mappings released)", before>>10, after>>10, released>>10)
	if released == 0 || after >= before {
		t.Fatalf("resident %d KiB after releasing, %d KiB before (%d KiB of mappings released): want fewer", after>>10, before>>10, released>>10)
	}
	for i, rr := range random {
		if !rr {
			t.Errorf("read-only mapping %d of the binary is not marked for random reads (no fault-around)", i)
		}
	}
}
