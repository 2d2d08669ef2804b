//go:build !linux

package memlimit

// ReleaseBinaryPages does nothing outside Linux.
func ReleaseBinaryPages() (int64, error) { return 0, nil }
