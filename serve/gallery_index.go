package serve

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dimtorch/dimtorch/ann"
	"github.com/dimtorch/dimtorch/internal/atomicfile"
)

// IndexOptions choose how a gallery is searched: Kind "exact" (or empty)
// scores every vector; "hnsw" or "ivf" search an approximate index (package
// ann), the one saved beside a .npy gallery by BuildGalleryIndex, or one
// built at load for a gallery embedded from a folder. EfSearch (HNSW) and
// Nprobe (IVF), when set, replace the values the index was saved with.
type IndexOptions struct {
	Kind     string
	EfSearch int
	Nprobe   int
}

// IndexKinds are the values of IndexOptions.Kind.
var IndexKinds = []string{"exact", string(ann.HNSW), string(ann.IVF)}

func (o IndexOptions) kind() (ann.Kind, error) {
	switch o.Kind {
	case "", "exact":
		return "", nil
	case string(ann.HNSW), string(ann.IVF):
		return ann.Kind(o.Kind), nil
	}
	return "", fmt.Errorf("index %q: want one of %s", o.Kind, strings.Join(IndexKinds, ", "))
}

// IndexMeta is the record written beside a gallery's index
// (FILE.KIND.json): what it indexes, with what parameters, and checksums
// that tie it to its gallery and detect a damaged file.
type IndexMeta struct {
	Format        string         `json:"format"`
	Kind          ann.Kind       `json:"kind"`
	Rows          int            `json:"rows"`
	Dim           int            `json:"dim"`
	Params        map[string]int `json:"params"`
	Gallery       string         `json:"gallery"`
	GalleryBytes  int64          `json:"gallery_bytes"`
	GallerySHA256 string         `json:"gallery_sha256"`
	IndexBytes    int64          `json:"index_bytes"`
	IndexSHA256   string         `json:"index_sha256"`
	BuildSeconds  float64        `json:"build_seconds"`
	Built         time.Time      `json:"built"`
}

const indexFormat = "dimtorch-gallery-index/1"

// IndexFiles are the index and its record for a .npy gallery:
// FILE.KIND.faiss and FILE.KIND.json beside FILE.npy.
func IndexFiles(gallery string, kind ann.Kind) (index, meta string) {
	base := strings.TrimSuffix(gallery, filepath.Ext(gallery)) + "." + string(kind)
	return base + ".faiss", base + ".json"
}

// BuildGalleryIndex builds an approximate index over the .npy gallery at
// path and saves it beside it (IndexFiles), both files written atomically.
func BuildGalleryIndex(ctx context.Context, path string, o ann.Options) (IndexMeta, error) {
	start := time.Now()
	g, err := LoadGallery(path, "")
	if err != nil {
		return IndexMeta{}, err
	}
	defer g.Close()
	gsum, gbytes, err := sha256File(path)
	if err != nil {
		return IndexMeta{}, err
	}
	ix, err := ann.Build(ctx, g.vecs, g.dim, o)
	if err != nil {
		return IndexMeta{}, fmt.Errorf("%s: %w", path, err)
	}
	defer ix.Close()
	meta := IndexMeta{Format: indexFormat, Kind: ix.Kind(), Rows: ix.Len(), Dim: ix.Dim(), Params: map[string]int{},
		Gallery: filepath.Base(path), GalleryBytes: gbytes, GallerySHA256: gsum}
	o = o.Defaults(g.Len())
	switch ix.Kind() {
	case ann.HNSW:
		meta.Params["M"], meta.Params["efConstruction"], meta.Params["efSearch"] = o.M, o.EfConstruction, o.EfSearch
	case ann.IVF:
		meta.Params["nlist"], meta.Params["nprobe"] = o.Nlist, o.Nprobe
	}
	ipath, mpath := IndexFiles(path, ix.Kind())
	if err := ix.Save(ipath); err != nil {
		return IndexMeta{}, err
	}
	if meta.IndexSHA256, meta.IndexBytes, err = sha256File(ipath); err != nil {
		return IndexMeta{}, err
	}
	meta.BuildSeconds, meta.Built = time.Since(start).Seconds(), time.Now().UTC().Truncate(time.Second)
	b, _ := json.MarshalIndent(meta, "", "  ")
	if err := atomicfile.WriteBytes(mpath, append(b, '\n'), 0o644); err != nil {
		return IndexMeta{}, err
	}
	return meta, nil
}

// UseIndex makes Nearest search an approximate index. A gallery loaded from
// FILE.npy loads the index saved beside it, after checking that its record
// names this very gallery (rows, dimension, SHA-256) and that the index
// file is the one written (SHA-256); a gallery embedded from a folder, or
// made by NewGallery, builds one in memory. Kind "exact" does nothing.
func (g *Gallery) UseIndex(ctx context.Context, o IndexOptions) error {
	kind, err := o.kind()
	if err != nil || kind == "" {
		return err
	}
	var ix *ann.Index
	if g.path == "" {
		if ix, err = ann.Build(ctx, g.vecs, g.dim, ann.Options{Kind: kind, EfSearch: o.EfSearch, Nprobe: o.Nprobe}); err != nil {
			return fmt.Errorf("gallery index: %w", err)
		}
	} else if ix, err = loadIndex(g, kind); err != nil {
		return err
	}
	for name, v := range map[string]int{"efSearch": o.EfSearch, "nprobe": o.Nprobe} {
		if v == 0 {
			continue
		}
		if err := ix.Set(name, v); err != nil {
			ix.Close()
			return fmt.Errorf("gallery index: %w", err)
		}
	}
	if g.index != nil {
		g.index.Close()
	}
	g.index = ix
	return nil
}

func loadIndex(g *Gallery, kind ann.Kind) (*ann.Index, error) {
	ipath, mpath := IndexFiles(g.path, kind)
	b, err := os.ReadFile(mpath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no %s index beside %s (%s): build it with `dimtorch index build --gallery %s --kind %s`",
			kind, g.path, mpath, g.path, kind)
	}
	if err != nil {
		return nil, err
	}
	var meta IndexMeta
	if err := json.Unmarshal(b, &meta); err != nil || meta.Format != indexFormat {
		return nil, fmt.Errorf("%s: not a dimtorch gallery index record (format %q, %v)", mpath, meta.Format, err)
	}
	rebuild := fmt.Sprintf("rebuild it: dimtorch index build --gallery %s --kind %s", g.path, kind)
	if meta.Kind != kind || meta.Rows != g.Len() || meta.Dim != g.Dim() {
		return nil, fmt.Errorf("%s: a %s index of %d x %d, the gallery %s is %d x %d; %s",
			mpath, meta.Kind, meta.Rows, meta.Dim, g.path, g.Len(), g.Dim(), rebuild)
	}
	gsum, _, err := sha256File(g.path)
	if err != nil {
		return nil, err
	}
	if gsum != meta.GallerySHA256 {
		return nil, fmt.Errorf("%s was built from another version of %s (its SHA-256 differs); %s", ipath, g.path, rebuild)
	}
	isum, _, err := sha256File(ipath)
	if err != nil {
		return nil, err
	}
	if isum != meta.IndexSHA256 {
		return nil, fmt.Errorf("%s is damaged (its SHA-256 is not the one %s recorded); %s", ipath, mpath, rebuild)
	}
	ix, err := ann.Load(ipath)
	if err != nil {
		return nil, err
	}
	if ix.Kind() != kind || ix.Len() != g.Len() || ix.Dim() != g.Dim() {
		ix.Close()
		return nil, fmt.Errorf("%s: a %s index of %d x %d for a gallery of %d x %d; %s", ipath, ix.Kind(), ix.Len(), ix.Dim(), g.Len(), g.Dim(), rebuild)
	}
	return ix, nil
}

// Index is the approximate index Nearest searches (nil: exact search).
func (g *Gallery) Index() *ann.Index { return g.index }

// DetachIndex takes the index from the gallery, which searches exactly
// from then on; the caller closes it.
func (g *Gallery) DetachIndex() *ann.Index {
	ix := g.index
	g.index = nil
	return ix
}

func sha256File(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
