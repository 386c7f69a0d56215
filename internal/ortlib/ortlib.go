// Package ortlib finds the onnxruntime shared library that dimtorch's
// inference side loads at run time.
package ortlib

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// EnvVar names the environment variable that points at the library file.
const EnvVar = "DIMTORCH_ONNXRUNTIME_LIB"

// libNames are the file names onnxruntime ships under, newest convention first.
var libNames = []string{"libonnxruntime.so", "libonnxruntime.so.1", "libonnxruntime.dylib", "onnxruntime.dll"}

// Candidates lists the places searched, in order: the explicit path, the
// environment variable, beside the executable (its directory, and
// ../third_party/onnxruntime, where `make setup` puts the library for
// bin/dimtorch), the user's cache, and the system library directories. The
// working directory and its parents are never searched: a service must not
// load whatever library file sits above the directory it was started in.
func Candidates(explicit string) []string {
	var c []string
	if explicit != "" {
		c = append(c, explicit)
	}
	if v := os.Getenv(EnvVar); v != "" {
		c = append(c, v)
	}
	for _, d := range searchDirs() {
		for _, n := range libNames {
			c = append(c, filepath.Join(d, n))
		}
	}
	return c
}

// UseRepositoryCopy is for tests, which run in a package directory of the
// repository: unless EnvVar is set, it points EnvVar at the library that
// `make setup` put in the repository's third_party/onnxruntime (found from
// the working directory upwards), for the test and the processes it starts.
func UseRepositoryCopy() {
	if os.Getenv(EnvVar) != "" {
		return
	}
	wd, err := os.Getwd()
	if err != nil {
		return
	}
	for d := wd; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "third_party", "onnxruntime", "libonnxruntime.so.1")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			os.Setenv(EnvVar, p)
			return
		}
		if filepath.Dir(d) == d {
			return
		}
	}
}

// ErrNotFound is returned by Find when no candidate exists.
var ErrNotFound = errors.New("onnxruntime shared library not found")

// Find returns the first existing candidate. An explicit path or the
// environment variable that names a missing file is an error of its own, so a
// typo is not silently replaced by another library.
func Find(explicit string) (string, error) {
	for _, p := range []string{explicit, os.Getenv(EnvVar)} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			return "", fmt.Errorf("onnxruntime library %s: not a readable file", p)
		}
		return p, nil
	}
	for _, p := range Candidates("") {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w in %s (the file names %s): run `make setup` in the dimtorch repository, which fetches it and "+
		"copies it to %s, or set %s to the file",
		ErrNotFound, strings.Join(searchDirs(), ", "), strings.Join(libNames, ", "), CacheDir(), EnvVar)
}

// CacheDir is the user's cache directory for the library, where `make setup`
// copies it so that a dimtorch binary built or installed anywhere finds it
// ("" when the user has no cache directory).
func CacheDir() string {
	cache, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(cache, "dimtorch", "onnxruntime")
}

// searchDirs are the directories Candidates searches, in order.
func searchDirs() []string {
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe), filepath.Join(filepath.Dir(exe), "..", "third_party", "onnxruntime"))
	}
	if c := CacheDir(); c != "" {
		dirs = append(dirs, c)
	}
	return append(dirs, "/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib")
}
