package history

import "github.com/greyharness/greyharness/internal/inputfile"

// Load reads a history.json (as runner.Save writes it): a regular file of at
// most inputfile.MaxHistory bytes that Decode accepts.
func Load(path string) (*History, error) {
	b, err := inputfile.Read(path, inputfile.MaxHistory)
	if err != nil {
		return nil, err
	}
	return Decode(path, b)
}
