package atomicfile

import (
	"io"
	"os"
)

// FS is the file-system operations whose order makes a save durable: a
// file's content is on disk once the file is synced, a directory entry (a
// file created, renamed in or out) once its directory is synced. Every
// save in dimtorch (Write here, the run directory's checkpoint swap in
// package train) goes through Sys, so that a test can record the operations
// and check their order against a power cut (Recorder), which a test that
// kills processes cannot: the page cache survives a killed process.
type FS interface {
	CreateTemp(dir, pattern string) (File, error)
	MkdirTemp(dir, pattern string) (string, error)
	Rename(oldpath, newpath string) error
	RemoveAll(path string) error
	// SyncDir makes the directory's entries durable.
	SyncDir(dir string) error
}

// File is a file being written.
type File interface {
	io.Writer
	Name() string
	Chmod(mode os.FileMode) error
	Sync() error
	Close() error
}

// Sys is the FS that saves use: the operating system's, unless a test
// swaps in a Recorder.
var Sys FS = osFS{}

type osFS struct{}

func (osFS) CreateTemp(dir, pattern string) (File, error)  { return os.CreateTemp(dir, pattern) }
func (osFS) MkdirTemp(dir, pattern string) (string, error) { return os.MkdirTemp(dir, pattern) }
func (osFS) Rename(oldpath, newpath string) error          { return os.Rename(oldpath, newpath) }
func (osFS) RemoveAll(path string) error                   { return os.RemoveAll(path) }
func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
