package inputfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok.yaml")
	os.WriteFile(ok, []byte("name: x\n"), 0o644)
	if b, err := Read(ok, 8); err != nil || string(b) != "name: x\n" {
		t.Fatalf("Read at the limit = %q, %v", b, err)
	}
	if _, err := Read(ok, 7); err == nil || !strings.Contains(err.Error(), ok+": larger than the 7 bytes limit") {
		t.Errorf("over the limit: %v", err)
	}
	if _, err := Read(filepath.Join(dir, "nope"), 8); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		fifo:        "not a regular file (a named pipe)",
		"/dev/zero": "not a regular file (a character device)",
		dir:         "not a regular file (a folder)",
	} {
		done := make(chan error, 1)
		go func() { _, err := Read(path, MaxYAML); done <- err }()
		select {
		case err := <-done:
			var e *Error
			if !errors.As(err, &e) || !strings.Contains(err.Error(), path+": "+want) {
				t.Errorf("Read(%s) = %v, want an *Error %q", path, err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Read(%s) blocked", path)
		}
	}
}
