package memlimit

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestSoftLimit(t *testing.T) {
	for _, c := range []struct{ limit, want int64 }{
		{256 << 20, 192 << 20}, // the install manifest's limit
		{1 << 30, 1<<30 - 64<<20},
		{96 << 20, 48 << 20}, // half, not 32 MiB
	} {
		if got := SoftLimit(c.limit); got != c.want {
			t.Errorf("SoftLimit(%d MiB) = %d MiB, want %d MiB", c.limit>>20, got>>20, c.want>>20)
		}
	}
}

func TestApply(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	got, err := Apply(env(map[string]string{Env: "268435456"}))
	if err != nil || got != 192<<20 {
		t.Fatalf("Apply = %d, %v; want 192 MiB", got, err)
	}
	if rt := debug.SetMemoryLimit(-1); rt != 192<<20 {
		t.Errorf("the runtime's limit is %d, want 192 MiB", rt)
	}

	debug.SetMemoryLimit(math.MaxInt64)
	if got, err := Apply(env(map[string]string{Env: "268435456", "GOMEMLIMIT": "100MiB"})); err != nil || got != 0 {
		t.Errorf("with GOMEMLIMIT set: Apply = %d, %v; want it left alone", got, err)
	}
	if rt := debug.SetMemoryLimit(-1); rt != math.MaxInt64 {
		t.Errorf("with GOMEMLIMIT set the runtime's limit changed to %d", rt)
	}
	if got, err := Apply(env(nil)); err != nil || got != 0 {
		t.Errorf("without a container limit: Apply = %d, %v", got, err)
	}
	for _, bad := range []string{"256Mi", "-1", "0"} {
		if _, err := Apply(env(map[string]string{Env: bad})); err == nil {
			t.Errorf("%s=%q accepted", Env, bad)
		}
	}
}
