package embed

import (
	"fmt"
	"math"

	ort "github.com/yalue/onnxruntime_go"
)

// Ranges runs the model at path on n images (float32 NCHW in [0, 1], like
// EmbedBatch) in batches and returns the smallest and largest value of each
// named graph output: the activation ranges that int8 calibration needs
// (export.CalibrationValues and export.WithOutputs name and expose them).
func Ranges(path string, o Options, data []float32, n, batch int, values []string) (map[string][2]float32, error) {
	if err := initEnv(o.Library); err != nil {
		return nil, err
	}
	ins, _, err := ort.GetInputOutputInfo(path)
	if err != nil {
		return nil, fmt.Errorf("%s is not a readable ONNX model: %w", path, err)
	}
	if len(ins) != 1 || len(ins[0].Dimensions) != 4 {
		return nil, fmt.Errorf("%s: expected one [N, C, H, W] input", path)
	}
	d := ins[0].Dimensions
	per := int(d[1] * d[2] * d[3])
	if n <= 0 || len(data) != n*per {
		return nil, fmt.Errorf("ranges: %d values do not make %d images of %d values", len(data), n, per)
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer opts.Destroy()
	if o.Threads > 0 {
		if err := opts.SetIntraOpNumThreads(o.Threads); err != nil {
			return nil, err
		}
	}
	s, err := ort.NewDynamicAdvancedSession(path, []string{ins[0].Name}, values, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer s.Destroy()
	out := make(map[string][2]float32, len(values))
	for _, v := range values {
		out[v] = [2]float32{float32(math.Inf(1)), float32(math.Inf(-1))}
	}
	batch = max(1, batch)
	for at := 0; at < n; at += batch {
		k := min(batch, n-at)
		in, err := ort.NewTensor(ort.NewShape(int64(k), d[1], d[2], d[3]), data[at*per:(at+k)*per])
		if err != nil {
			return nil, err
		}
		outs := make([]ort.Value, len(values))
		err = s.Run([]ort.Value{in}, outs)
		in.Destroy()
		if err != nil {
			return nil, fmt.Errorf("ranges: %w", err)
		}
		for i, v := range values {
			t, ok := outs[i].(*ort.Tensor[float32])
			if !ok {
				outs[i].Destroy()
				return nil, fmt.Errorf("ranges: %s is not a float32 tensor", v)
			}
			r := out[v]
			for _, x := range t.GetData() {
				r[0], r[1] = min(r[0], x), max(r[1], x)
			}
			out[v] = r
			outs[i].Destroy()
		}
	}
	return out, nil
}
