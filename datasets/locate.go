package datasets

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// EnvDataDir names the environment variable with a directory of datasets.
const EnvDataDir = "DIMTORCH_DATA"

// DebianDataDir is where Debian's dataset packages install their files
// (e.g. dataset-fashion-mnist puts Fashion-MNIST in DebianDataDir/fashion-mnist).
const DebianDataDir = "/usr/share/datasets"

// CacheDir returns the per-user directory where `dimtorch data download`
// stores datasets (~/.cache/dimtorch/data on Linux).
func CacheDir() (string, error) {
	c, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(c, "dimtorch", "data"), nil
}

// SearchDirs lists the directories Locate tries for a dataset, in order:
// dataDir (the directory itself, then dataDir/NAME) when set; otherwise
// Debian's path, $DIMTORCH_DATA/NAME and the user cache.
func SearchDirs(name, dataDir string) []string {
	if dataDir != "" {
		return []string{dataDir, filepath.Join(dataDir, name)}
	}
	dirs := []string{filepath.Join(DebianDataDir, name)}
	if v := os.Getenv(EnvDataDir); v != "" {
		dirs = append(dirs, filepath.Join(v, name), v)
	}
	if c, err := CacheDir(); err == nil {
		dirs = append(dirs, filepath.Join(c, name))
	}
	return dirs
}

// Locate finds the directory holding a dataset's files. A dataset counts as
// present in a directory when any of its identifying files is there (the
// readers then report precisely which file is missing or damaged).
func Locate(s *spec, dataDir string) (string, error) {
	dirs := SearchDirs(s.name, dataDir)
	for _, d := range dirs {
		for _, f := range s.files {
			if _, err := os.Stat(filepath.Join(d, f)); err == nil {
				return d, nil
			}
		}
	}
	return "", fmt.Errorf("%s not found (looked in %s). %s", s.name, strings.Join(dirs, ", "), s.howToGet)
}
