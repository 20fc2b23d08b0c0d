//go:build !unix

package inputfile

import (
	"fmt"
	"os"
)

// open refuses what is not a regular file before opening it (no O_NONBLOCK
// here; the file could be swapped in between, which only unix guards).
func open(path string) (*os.File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, &Error{Path: path, Reason: fmt.Sprintf("not a regular file (%s); greyharness reads only regular files", kind(st.Mode()))}
	}
	return os.Open(path)
}
