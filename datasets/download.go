package datasets

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// RemoteFile is one file of a dataset's official distribution.
type RemoteFile struct {
	URL     string
	Size    int64
	SHA256  string
	Extract bool // a .tar.gz to unpack into the dataset directory
}

// Name is the file's base name.
func (f RemoteFile) Name() string { return path.Base(f.URL) }

// Sources lists the official files of each downloadable dataset. The sizes
// and SHA-256 sums are those recorded by TensorFlow Datasets
// (tensorflow_datasets/url_checksums) for the same URLs.
var Sources = map[string][]RemoteFile{
	"mnist": {
		{URL: "https://storage.googleapis.com/cvdf-datasets/mnist/train-images-idx3-ubyte.gz", Size: 9912422, SHA256: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"},
		{URL: "https://storage.googleapis.com/cvdf-datasets/mnist/train-labels-idx1-ubyte.gz", Size: 28881, SHA256: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"},
		{URL: "https://storage.googleapis.com/cvdf-datasets/mnist/t10k-images-idx3-ubyte.gz", Size: 1648877, SHA256: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"},
		{URL: "https://storage.googleapis.com/cvdf-datasets/mnist/t10k-labels-idx1-ubyte.gz", Size: 4542, SHA256: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"},
	},
	"fashion-mnist": {
		{URL: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz", Size: 26421880, SHA256: "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"},
		{URL: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-labels-idx1-ubyte.gz", Size: 29515, SHA256: "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"},
		{URL: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz", Size: 4422102, SHA256: "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"},
		{URL: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz", Size: 5148, SHA256: "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"},
	},
	"cifar10": {
		{URL: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", Size: 170052171, SHA256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd", Extract: true},
	},
	"cifar100": {
		{URL: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", Size: 168513733, SHA256: "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec", Extract: true},
	},
	"stl10": {
		{URL: "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", Size: 2640397119, SHA256: "f31fd99273a1acb8609c8db427cebb1de3f71de77758cdc0e22956e1289b9866", Extract: true},
	},
}

// DownloadOptions configure Download.
type DownloadOptions struct {
	// Mirror replaces the directory part of every URL (e.g. a local copy).
	Mirror string
	// Client defaults to http.DefaultClient.
	Client *http.Client
	// Progress, when set, is called as bytes arrive.
	Progress func(file string, done, total int64)
}

// ErrChecksum reports a downloaded file whose SHA-256 is not the expected one.
var ErrChecksum = errors.New("checksum mismatch")

// Download fetches a dataset's official files into dir (created if needed),
// verifying each file's size and SHA-256, and unpacks archives. Interrupted
// downloads resume from the partial file (name.part) with an HTTP range
// request. It never runs implicitly: only `dimtorch data download` calls it.
func Download(ctx context.Context, name, dir string, o DownloadOptions) error {
	files, ok := Sources[strings.ToLower(name)]
	if !ok {
		var names []string
		for k := range Sources {
			names = append(names, k)
		}
		return fmt.Errorf("no download for %q (downloadable: %s)", name, strings.Join(names, ", "))
	}
	return DownloadFiles(ctx, files, dir, o)
}

// DownloadFiles fetches and verifies the given files into dir.
func DownloadFiles(ctx context.Context, files []RemoteFile, dir string, o DownloadOptions) error {
	if err := parseMirror(o.Mirror); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if o.Mirror != "" {
			f.URL = strings.TrimSuffix(o.Mirror, "/") + "/" + f.Name()
		}
		dest := filepath.Join(dir, f.Name())
		done := dest
		if f.Extract {
			done = dest + ".extracted"
		}
		if _, err := os.Stat(done); err == nil {
			continue // already complete
		}
		if err := fetch(ctx, f, dest, o); err != nil {
			return err
		}
		if f.Extract {
			if err := extractTarGz(dest, dir); err != nil {
				return err
			}
			if err := os.WriteFile(done, []byte(f.SHA256+"\n"), 0o644); err != nil {
				return err
			}
			os.Remove(dest)
		}
	}
	return nil
}

// fetch downloads f.URL to dest via dest.part, resuming and verifying.
func fetch(ctx context.Context, f RemoteFile, dest string, o DownloadOptions) error {
	client := o.Client
	if client == nil {
		client = http.DefaultClient
	}
	part := dest + ".part"
	var have int64
	if st, err := os.Stat(part); err == nil {
		have = st.Size()
	}
	if f.Size > 0 && have > f.Size {
		os.Remove(part)
		have = 0
	}
	if f.Size == 0 || have < f.Size {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL, nil)
		if err != nil {
			return err
		}
		if have > 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("download %s: %w (the partial file is kept; run the command again to resume)", f.URL, err)
		}
		defer resp.Body.Close()
		flags := os.O_CREATE | os.O_WRONLY
		switch {
		case resp.StatusCode == http.StatusPartialContent && have > 0:
			flags |= os.O_APPEND
		case resp.StatusCode == http.StatusOK:
			flags |= os.O_TRUNC
			have = 0
		case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have > 0:
			// The part file already holds everything: verify it below.
		default:
			return fmt.Errorf("download %s: HTTP %s", f.URL, resp.Status)
		}
		if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
			out, err := os.OpenFile(part, flags, 0o644)
			if err != nil {
				return err
			}
			var w io.Writer = out
			if o.Progress != nil {
				w = &progressWriter{w: out, name: f.Name(), done: have, total: f.Size, fn: o.Progress}
			}
			_, cerr := io.Copy(w, resp.Body)
			if err := out.Close(); cerr == nil {
				cerr = err
			}
			if cerr != nil {
				return fmt.Errorf("download %s: %w (the partial file is kept; run the command again to resume)", f.URL, cerr)
			}
		}
	}
	if err := verify(part, f); err != nil {
		os.Remove(part)
		return err
	}
	return os.Rename(part, dest)
}

func verify(p string, f RemoteFile) error {
	r, err := os.Open(p)
	if err != nil {
		return err
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return err
	}
	if f.Size > 0 && n != f.Size {
		return fmt.Errorf("%s: %w: %d bytes, expected %d (the file was removed; run the command again)", f.Name(), ErrChecksum, n, f.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); f.SHA256 != "" && got != f.SHA256 {
		return fmt.Errorf("%s: %w: SHA-256 %s, expected %s (the file was removed; run the command again)", f.Name(), ErrChecksum, got, f.SHA256)
	}
	return nil
}

type progressWriter struct {
	w           io.Writer
	name        string
	done, total int64
	fn          func(string, int64, int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	p.fn(p.name, p.done, p.total)
	return n, err
}

// extractTarGz unpacks regular files and directories of a .tar.gz into dir,
// refusing entries that would escape it.
func extractTarGz(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: corrupt gzip data: %v", archive, err)
	}
	tr := tar.NewReader(zr)
	root, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: corrupt archive: %v", archive, err)
		}
		target := filepath.Join(root, filepath.FromSlash(h.Name))
		if target != root && !strings.HasPrefix(target, root+string(filepath.Separator)) {
			return fmt.Errorf("%s: entry %q would be written outside %s", archive, h.Name, dir)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			_, cerr := io.Copy(out, tr)
			if err := out.Close(); cerr == nil {
				cerr = err
			}
			if cerr != nil {
				return fmt.Errorf("%s: %s: %v", archive, h.Name, cerr)
			}
		}
	}
}

// parseMirror checks a mirror URL.
func parseMirror(m string) error {
	if m == "" {
		return nil
	}
	u, err := url.Parse(m)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("mirror %q is not an http(s) URL", m)
	}
	return nil
}
