//go:build unix

package inputfile

import (
	"os"
	"syscall"
)

// open opens path for reading without blocking on a FIFO that has no
// writer (O_NONBLOCK; no effect on a regular file's reads on Linux).
func open(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
