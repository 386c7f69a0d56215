// Package embed runs exported dimtorch encoders (ONNX) through onnxruntime
// to embed images in Go services, with no libtorch at all. A Model is safe
// for concurrent use by several goroutines, Close included: it waits for
// the runs in progress and later calls return ErrClosed.
//
// The onnxruntime shared library is found from Options.Library, the
// DIMTORCH_ONNXRUNTIME_LIB environment variable, beside the executable
// (its directory, or ../third_party/onnxruntime where `make setup` puts it),
// the user cache, or the system library directories (see package ortlib);
// never from the working directory. Open fails with a clear error when it
// is absent.
//
// A model says how to feed it: dimtorch export records its preprocessing
// (input size and channels, resize steps, value range) as JSON under the
// metadata key dimtorch.preprocessing (see Preprocessing), which Open reads
// and Preprocess follows. For models exported before that record existed,
// Open derives the same from the training data named in the "data"
// metadata, by the rule training used (internal/preproc).
//
// Errors match the sentinels ErrClosed, ErrCanceled, ErrSize, ErrChannels,
// ErrImage and ErrPreprocessing through errors.Is.
package embed

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // decoders for EmbedFile
	_ "image/png"
	"os"
	"sync"

	"github.com/dimtorch/dimtorch/internal/imgops"
	"github.com/dimtorch/dimtorch/internal/onnxsum"
	"github.com/dimtorch/dimtorch/internal/ortlib"
	"github.com/dimtorch/dimtorch/internal/preproc"
	ort "github.com/yalue/onnxruntime_go"
)

// Options configure Open.
type Options struct {
	Library string // path of libonnxruntime; empty: search (see the package doc)
	Threads int    // intra-op threads per run (default 1; set it explicitly for throughput)
	Output  string // the output to return (default "y")
	// NoSpin stops onnxruntime's threads from spinning while they wait for
	// work (session.intra_op.allow_spinning = 0): slower for back-to-back
	// runs, but leaves the cores to the rest of a service between runs.
	NoSpin bool
}

// Model is an opened encoder.
type Model struct {
	mu      sync.RWMutex // runs hold it shared, Close exclusively
	session *ort.DynamicAdvancedSession
	input   string
	output  string
	c, h, w int64
	dim     int64
	prep    Preprocessing // how images become the input (recorded, or derived from "data")
	// recorded says whether prep was read from the model (else derived).
	recorded bool
	// prepErr is why images cannot be made for the model (nil when they can).
	prepErr error
	// lut maps channel c's 8-bit values to the input's (Preprocess).
	lut [][256]float32
}

// Preprocessing is how images are fed to a model: the record that dimtorch
// export writes under the metadata key dimtorch.preprocessing (as JSON; see
// PreprocessingKey) and that Preprocess follows. Its fields:
//
//	version     1
//	channels    1 or 3, height, width: the input's, as the graph declares
//	color       "gray" (luma, ITU-R 601) or "rgb"
//	resize      [{"height", "width"}, ...]: bilinear resizes in order, each
//	            skipped when the image has that size already; the last is
//	            the input's size (STL-10 and folder models: 64x64 first)
//	resample    "bilinear" (pixel centres aligned, no antialiasing, 8-bit
//	            values rounded after each step)
//	range       [low, high]: 8-bit values v become low + (high-low) v/255;
//	            dimtorch's models take [0, 1]
//	mean, std   optional, per channel: then (x - mean) / std; none in
//	            dimtorch's models
//	in_graph    for information: what the graph does with its input (2x-1,
//	            to the [-1, 1] the encoder was trained on)
type Preprocessing = preproc.Spec

// PreprocessingKey is the metadata key of a model's Preprocessing.
const PreprocessingKey = preproc.Key

var (
	envOnce sync.Once
	envLib  string
	envErr  error
)

// initEnv loads the onnxruntime library once per process.
func initEnv(lib string) error {
	path, err := ortlib.Find(lib)
	if err != nil {
		return err
	}
	envOnce.Do(func() {
		envLib = path
		ort.SetSharedLibraryPath(path)
		if err := ort.InitializeEnvironment(); err != nil {
			envErr = fmt.Errorf("onnxruntime library %s: %w", path, err)
		}
	})
	if envErr != nil {
		return envErr
	}
	if envLib != path {
		return fmt.Errorf("onnxruntime is already loaded from %s; one process uses one library (asked for %s)", envLib, path)
	}
	return nil
}

// Open loads an exported model. It checks that the file is an ONNX model
// with one float32 NCHW image input of fixed size and the requested output.
func Open(path string, o Options) (*Model, error) {
	if err := initEnv(o.Library); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if _, err := onnxsum.Verify(raw); err != nil {
		if errors.Is(err, onnxsum.ErrNotONNX) {
			return nil, fmt.Errorf("%s is %w", path, err)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if o.Output == "" {
		o.Output = "y"
	}
	if o.Threads <= 0 {
		o.Threads = 1
	}
	ins, outs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		return nil, fmt.Errorf("%s is not a readable ONNX model: %w", path, err)
	}
	sig, err := checkSignature(ins, outs, o.Output)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m := &Model{input: sig.input, output: o.Output, c: sig.c, h: sig.h, w: sig.w, dim: sig.dim}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer opts.Destroy()
	if err := opts.SetIntraOpNumThreads(o.Threads); err != nil {
		return nil, err
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		return nil, err
	}
	if o.NoSpin {
		if err := opts.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"); err != nil {
			return nil, err
		}
	}
	m.session, err = ort.NewDynamicAdvancedSession(path, []string{m.input}, []string{m.output}, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := m.readPreprocessing(); err != nil {
		m.session.Destroy()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// readPreprocessing sets the model's preprocessing from its metadata: the
// recorded Preprocessing, else the one derived from the training data's
// name ("data") by the rule training follows.
func (m *Model) readPreprocessing() error {
	md, err := m.session.GetModelMetadata()
	if err != nil {
		return fmt.Errorf("reading the model's metadata: %w", err)
	}
	defer md.Destroy()
	v, ok, err := md.LookupCustomMetadataMap(PreprocessingKey)
	if err != nil {
		return fmt.Errorf("reading the model's metadata: %w", err)
	}
	if ok {
		p, err := preproc.Parse(v)
		if err != nil {
			return kindf(ErrPreprocessing, "metadata %s: %w", PreprocessingKey, err)
		}
		if int64(p.Channels) != m.c || int64(p.Height) != m.h || int64(p.Width) != m.w {
			return kindf(ErrPreprocessing, "metadata %s: %w: it is for a %dx%dx%d input, the graph takes %dx%dx%d",
				PreprocessingKey, preproc.ErrInvalid, p.Channels, p.Height, p.Width, m.c, m.h, m.w)
		}
		m.prep, m.recorded = p, true
	} else {
		data, _, err := md.LookupCustomMetadataMap("data")
		if err != nil {
			return fmt.Errorf("reading the model's metadata: %w", err)
		}
		m.prep = preproc.For(data, int(m.c), int(m.h), int(m.w))
		if err := m.prep.Validate(); err != nil { // the model still embeds values (EmbedBatch)
			m.prepErr = fmt.Errorf("embed: no images can be made for the model: %w", err)
			if m.c != 1 && m.c != 3 {
				m.prepErr = fmt.Errorf("embed: images make 1- or 3-channel inputs, the model takes %d channels", m.c)
			}
			return nil
		}
	}
	m.lut = make([][256]float32, m.c)
	for c := range m.lut {
		for v := range 256 {
			if m.prep.Unit() {
				m.lut[c][v] = float32(v) / 255
			} else {
				m.lut[c][v] = m.value(c, float64(v)/255)
			}
		}
	}
	return nil
}

// value maps x in [0, 1] (an 8- or 16-bit value over its maximum) of
// channel c to the model's input by its range, mean and std.
func (m *Model) value(c int, x float64) float32 {
	p := &m.prep
	v := p.Range[0] + (p.Range[1]-p.Range[0])*x
	if p.Mean != nil {
		v = (v - p.Mean[c]) / p.Std[c]
	}
	return float32(v)
}

// Preprocessing returns how the model takes images, and whether the model
// records it (else it was derived from the training data's name, for models
// exported before the record existed).
func (m *Model) Preprocessing() (p Preprocessing, recorded bool) {
	p = m.prep
	p.Resize = append([]preproc.Size(nil), p.Resize...)
	p.Range = append([]float64(nil), p.Range...)
	if p.Mean != nil {
		p.Mean = append([]float64(nil), p.Mean...)
		p.Std = append([]float64(nil), p.Std...)
	}
	return p, m.recorded
}

// maxValues bounds the values of one image, and of one embedding, that a
// model may declare (2^31: 8 GiB of float32), so that the sizes computed
// from them cannot overflow.
const maxValues = 1 << 31

// signature is what Open needs of a model's inputs and outputs.
type signature struct {
	input   string
	c, h, w int64 // the image input's fixed channels and size
	dim     int64 // values per image of the output
}

// checkSignature checks the inputs and outputs onnxruntime reports for a
// model: one float32 tensor input of shape [N, C, H, W] with C, H and W
// fixed, and a float32 tensor output named output of shape [N, ...] with
// the dimensions after the batch fixed.
func checkSignature(ins, outs []ort.InputOutputInfo, output string) (signature, error) {
	if len(ins) != 1 || ins[0].OrtValueType != ort.ONNXTypeTensor || len(ins[0].Dimensions) != 4 || ins[0].DataType != ort.TensorElementDataTypeFloat {
		return signature{}, fmt.Errorf("expected one float32 input of shape [N, C, H, W], found %v", ins)
	}
	s := signature{input: ins[0].Name}
	d := ins[0].Dimensions
	s.c, s.h, s.w = d[1], d[2], d[3]
	if s.c <= 0 || s.h <= 0 || s.w <= 0 {
		return signature{}, fmt.Errorf("the input's channels and size must be fixed, got %v", d)
	}
	if _, ok := product(d[1:]); !ok {
		return signature{}, fmt.Errorf("the input %v holds more than %d values per image", d, maxValues)
	}
	found := false
	for _, out := range outs {
		if out.Name != output {
			continue
		}
		if found {
			return signature{}, fmt.Errorf("two outputs are named %q", output)
		}
		found = true
		if out.OrtValueType != ort.ONNXTypeTensor || len(out.Dimensions) < 1 || out.DataType != ort.TensorElementDataTypeFloat {
			return signature{}, fmt.Errorf("output %q must be a float32 tensor of shape [N, ...], found %v", output, &out)
		}
		dim, ok := product(out.Dimensions[1:])
		if dim <= 0 {
			return signature{}, fmt.Errorf("output %q must have a fixed size per image, got %v", output, out.Dimensions)
		}
		if !ok {
			return signature{}, fmt.Errorf("output %q %v holds more than %d values per image", output, out.Dimensions, maxValues)
		}
		s.dim = dim
	}
	if !found {
		return signature{}, fmt.Errorf("the model has no output %q", output)
	}
	return s, nil
}

// product multiplies dims, which must all be positive (else it returns 0),
// and says whether the product is at most maxValues.
func product(dims []int64) (int64, bool) {
	p := int64(1)
	for _, d := range dims {
		if d <= 0 {
			return 0, true
		}
		if p > maxValues/d {
			return p, false
		}
		p *= d
	}
	return p, true
}

// Close releases the session once the runs in progress have finished;
// later calls return ErrClosed. It is safe to call more than once and
// while other goroutines embed.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.session == nil {
		return nil
	}
	err := m.session.Destroy()
	m.session = nil
	return err
}

// InputShape returns the channels, height and width the model takes.
func (m *Model) InputShape() (c, h, w int) { return int(m.c), int(m.h), int(m.w) }

// Dim returns the length of one embedding.
func (m *Model) Dim() int { return int(m.dim) }

// InputName is the name of the ONNX graph's image input.
func (m *Model) InputName() string { return m.input }

// OutputName is the name of the ONNX graph output the model returns
// (Options.Output: "y" unless chosen otherwise).
func (m *Model) OutputName() string { return m.output }

// EmbedBatch embeds n images given as float32 NCHW values as the model
// takes them (Preprocessing's range, [0, 1] for dimtorch's models) and
// returns n vectors.
func (m *Model) EmbedBatch(data []float32, n int) ([][]float32, error) {
	return m.EmbedBatchContext(context.Background(), data, n)
}

// EmbedBatchContext is EmbedBatch that gives up when ctx is done: before
// the run, or during it (onnxruntime's run is told to terminate), with an
// error that matches ErrCanceled and ctx's error.
func (m *Model) EmbedBatchContext(ctx context.Context, data []float32, n int) ([][]float32, error) {
	if ctx.Err() != nil {
		return nil, canceled(ctx)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.session == nil {
		return nil, ErrClosed
	}
	per := int(m.c * m.h * m.w)
	if n <= 0 || len(data) != n*per {
		return nil, kindf(ErrSize, "embed: %d values do not make %d images of %dx%dx%d", len(data), n, m.c, m.h, m.w)
	}
	in, err := ort.NewTensor(ort.NewShape(int64(n), m.c, m.h, m.w), data)
	if err != nil {
		return nil, err
	}
	defer in.Destroy()
	var ro *ort.RunOptions
	if ctx.Done() != nil {
		if ro, err = ort.NewRunOptions(); err != nil {
			return nil, err
		}
		// Terminate may be running when the run returns: the options are
		// destroyed only after it, under mu.
		var mu sync.Mutex
		done := false
		stop := context.AfterFunc(ctx, func() {
			mu.Lock()
			defer mu.Unlock()
			if !done {
				_ = ro.Terminate()
			}
		})
		defer func() {
			stop()
			mu.Lock()
			done = true
			_ = ro.Destroy()
			mu.Unlock()
		}()
	}
	outs := []ort.Value{nil}
	if err := m.session.RunWithOptions([]ort.Value{in}, outs, ro); err != nil {
		if ctx.Err() != nil {
			return nil, canceled(ctx)
		}
		return nil, fmt.Errorf("embed: %w", err)
	}
	defer outs[0].Destroy()
	if ctx.Err() != nil {
		return nil, canceled(ctx)
	}
	t, ok := outs[0].(*ort.Tensor[float32])
	if !ok {
		return nil, fmt.Errorf("embed: the output is not a float32 tensor")
	}
	flat := t.GetData()
	res := make([][]float32, n)
	for i := range res {
		res[i] = append([]float32(nil), flat[i*int(m.dim):(i+1)*int(m.dim)]...)
	}
	return res, nil
}

// Pixels converts an image to the model's input layout (CHW), with values
// as Preprocessing says ([0, 1] for dimtorch's models). The image must have
// the model's size (else ErrSize); a 1-channel model takes grayscale images
// and a 3-channel model colour ones (else ErrChannels).
func (m *Model) Pixels(img image.Image) ([]float32, error) {
	if m.prepErr != nil {
		return nil, m.prepErr
	}
	b := img.Bounds()
	if int64(b.Dx()) != m.w || int64(b.Dy()) != m.h {
		return nil, kindf(ErrSize, "embed: the image is %dx%d, the model takes %dx%d", b.Dx(), b.Dy(), m.w, m.h)
	}
	gray := false
	switch img.ColorModel() {
	case color.GrayModel, color.Gray16Model:
		gray = true
	}
	if gray != (m.c == 1) {
		want := "colour (RGB)"
		if m.c == 1 {
			want = "grayscale"
		}
		return nil, kindf(ErrChannels, "embed: the model takes %s images, got %T", want, img)
	}
	w, h := int(m.w), int(m.h)
	out := make([]float32, int(m.c)*h*w)
	unit := m.prep.Unit()
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			r, g, bl, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
			at := y*w + x
			rgb := [3]uint32{r, g, bl}
			for c, v := range rgb[:m.c] {
				if unit {
					out[c*h*w+at] = float32(v) / 65535
				} else {
					out[c*h*w+at] = m.value(c, float64(v)/65535)
				}
			}
		}
	}
	return out, nil
}

// Preprocess turns any decoded image into the model's input, as dimtorch
// evaluates the encoder on its data, following the model's Preprocessing:
// the model's channels (luminance for 1-channel models, grey repeated for
// 3-channel ones); the bilinear resizes of its resize steps (for models
// trained on STL-10 or an image folder, 64 x 64 first, then the input
// size; the same arithmetic as training's, package imgops); values in its
// range ([0, 1] for dimtorch's models). An image without pixels is
// ErrImage.
func (m *Model) Preprocess(img image.Image) ([]float32, error) {
	if m.prepErr != nil {
		return nil, m.prepErr
	}
	c := int(m.c)
	b := img.Bounds()
	h, w := b.Dy(), b.Dx()
	if h <= 0 || w <= 0 {
		return nil, kindf(ErrImage, "embed: an empty image")
	}
	pix := make([]uint8, c*h*w)
	gray, isGray := img.(*image.Gray)
	rgba, isRGBA := img.(*image.RGBA) // what the PNG decoder gives for opaque colour images
	for y := 0; y < h; y++ {
		if isGray && c == 1 {
			copy(pix[y*w:(y+1)*w], gray.Pix[(y+b.Min.Y-gray.Rect.Min.Y)*gray.Stride+(b.Min.X-gray.Rect.Min.X):])
			continue
		}
		if isRGBA && c == 3 && opaque(rgba) {
			row := rgba.Pix[(y+b.Min.Y-rgba.Rect.Min.Y)*rgba.Stride+4*(b.Min.X-rgba.Rect.Min.X):]
			for x := 0; x < w; x++ {
				pix[y*w+x], pix[h*w+y*w+x], pix[2*h*w+y*w+x] = row[4*x], row[4*x+1], row[4*x+2]
			}
			continue
		}
		for x := 0; x < w; x++ {
			px := img.At(b.Min.X+x, b.Min.Y+y)
			if c == 1 {
				pix[y*w+x] = color.GrayModel.Convert(px).(color.Gray).Y
				continue
			}
			r, g, bl, _ := px.RGBA()
			pix[y*w+x], pix[h*w+y*w+x], pix[2*h*w+y*w+x] = uint8(r>>8), uint8(g>>8), uint8(bl>>8)
		}
	}
	for _, s := range m.prep.Resize {
		if h != s.Height || w != s.Width {
			pix, h, w = imgops.Resize(pix, c, h, w, s.Height, s.Width), s.Height, s.Width
		}
	}
	out := make([]float32, len(pix))
	plane := h * w
	for ch := 0; ch < c; ch++ {
		lut := &m.lut[ch]
		for i, v := range pix[ch*plane : (ch+1)*plane] {
			out[ch*plane+i] = lut[v]
		}
	}
	return out, nil
}

// opaque reports whether every pixel of img is fully opaque (then its
// premultiplied values are the colours themselves).
func opaque(img *image.RGBA) bool {
	if img.Rect.Empty() {
		return true
	}
	return img.Opaque()
}

// EmbedImages embeds images of the model's size and colour mode.
func (m *Model) EmbedImages(imgs []image.Image) ([][]float32, error) {
	if len(imgs) == 0 {
		return nil, nil
	}
	per := int(m.c * m.h * m.w)
	data := make([]float32, 0, len(imgs)*per)
	for i, img := range imgs {
		p, err := m.Pixels(img)
		if err != nil {
			return nil, fmt.Errorf("image %d: %w", i, err)
		}
		data = append(data, p...)
	}
	return m.EmbedBatch(data, len(imgs))
}

// EmbedFile decodes a PNG or JPEG file and embeds it.
func (m *Model) EmbedFile(path string) ([]float32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		return nil, kindf(ErrImage, "%s: not a readable PNG or JPEG: %w", path, err)
	}
	v, err := m.EmbedImages([]image.Image{img})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return v[0], nil
}
