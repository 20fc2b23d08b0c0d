// Package inputfile reads the files a user hands greyharness (scenarios,
// relay profiles, policies, saved histories) safely: only regular files, and
// no more than a stated limit, so that a FIFO cannot hang a command and
// /dev/zero or a runaway file cannot exhaust memory.
package inputfile

import (
	"fmt"
	"io"
	"io/fs"
)

// Size limits of the inputs greyharness reads.
const (
	// MaxYAML bounds a scenario file, a relay profile or a fake-MTA policy.
	MaxYAML = 16 << 20
	// MaxHistory bounds a saved history.json (a 100,000-message run's is
	// about 100 MiB).
	MaxHistory = 256 << 20
)

// Error is why an input file was refused; its text is "path: reason".
type Error struct {
	Path   string
	Reason string
}

func (e *Error) Error() string { return e.Path + ": " + e.Reason }

// Read returns the content of the regular file at path, refusing anything
// else (FIFO, device, socket, folder) and files larger than max bytes. A
// FIFO is opened without blocking, so refusing it never waits for a writer.
// Errors from the file system keep their *fs.PathError form.
func Read(path string, max int64) ([]byte, error) {
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, &Error{Path: path, Reason: fmt.Sprintf("not a regular file (%s); greyharness reads only regular files", kind(st.Mode()))}
	}
	if st.Size() > max {
		return nil, tooLarge(path, max)
	}
	// The file may grow while it is read: never read past the limit.
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	if int64(len(data)) > max {
		return nil, tooLarge(path, max)
	}
	return data, nil
}

func tooLarge(path string, max int64) error {
	return &Error{Path: path, Reason: fmt.Sprintf("larger than the %s limit for this kind of input", size(max))}
}

func size(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a folder"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "mode " + m.Type().String()
}
