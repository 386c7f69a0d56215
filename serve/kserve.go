package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
)

// The Open Inference Protocol (KServe v2), HTTP/REST form, beside the /v1
// routes:
//
//	GET  /v2/health/live, /v2/health/ready            {"live": true}, {"ready": bool} (open, like /healthz)
//	GET  /v2                                          {"name": "dimtorch", "version", "extensions": []}
//	GET  /v2/models/NAME[/versions/VERSION]           inputs, outputs, shapes, datatypes
//	GET  /v2/models/NAME[/versions/VERSION]/ready     {"name", "ready"}
//	POST /v2/models/NAME[/versions/VERSION]/infer     tensors in, tensors out
//
// NAME is Config.ModelName; VERSION, when given, must be the deployment's
// (the Dimtorch-Model-Version). The model takes one input of two kinds:
// the ONNX graph's own input (FP32, [N, C, H, W], the preprocessed pixels
// in the model's layout, data flat in row-major order or nested), or
// "encoded_image" (BYTES, [N]: PNG or JPEG files, each a base64 string or a data
// URL, preprocessed as /v1/embed does); it returns its output (FP32,
// [N, D]). Errors are {"error": "..."} with an HTTP status, as the
// protocol asks (the /v1 "status" field comes along).

// ImageInput is the name of the BYTES input of encoded images.
const ImageInput = "encoded_image"

// tensorNames is what a Model may tell of its graph (*embed.Model does).
type tensorNames interface {
	InputName() string
	OutputName() string
}

func names(m Model) (in, out string) {
	if n, ok := m.(tensorNames); ok {
		return n.InputName(), n.OutputName()
	}
	return "input", "y"
}

type v2Tensor struct {
	Name     string          `json:"name"`
	Datatype string          `json:"datatype"`
	Shape    []int64         `json:"shape"`
	Data     json.RawMessage `json:"data,omitempty"`
	// Parameters are accepted and ignored (the protocol's optional
	// per-tensor key/value pairs).
	Parameters map[string]any `json:"parameters,omitempty"`
}

type v2Request struct {
	ID         string         `json:"id,omitempty"`
	Parameters map[string]any `json:"parameters,omitempty"`
	Inputs     []v2Tensor     `json:"inputs"`
	Outputs    []struct {
		Name       string         `json:"name"`
		Parameters map[string]any `json:"parameters,omitempty"`
	} `json:"outputs,omitempty"`
}

type v2Output struct {
	Name     string    `json:"name"`
	Datatype string    `json:"datatype"`
	Shape    []int64   `json:"shape"`
	Data     []float32 `json:"data"`
}

type v2Response struct {
	ModelName    string     `json:"model_name"`
	ModelVersion string     `json:"model_version,omitempty"`
	ID           string     `json:"id,omitempty"`
	Outputs      []v2Output `json:"outputs"`
}

type v2Metadata struct {
	Name     string     `json:"name"`
	Versions []string   `json:"versions,omitempty"`
	Platform string     `json:"platform"`
	Inputs   []v2Tensor `json:"inputs"`
	Outputs  []v2Tensor `json:"outputs"`
}

// v2Routes adds the protocol's routes to mux.
func (s *Server) v2Routes(route, open func(path, method, name string, h handler)) {
	open("/v2/health/live", http.MethodGet, "v2_live", func(w http.ResponseWriter, _ *http.Request, _ *live) error {
		return writeJSON(w, http.StatusOK, map[string]bool{"live": true})
	})
	open("/v2/health/ready", http.MethodGet, "v2_ready", func(w http.ResponseWriter, _ *http.Request, _ *live) error {
		ready := s.ready.Load()
		code := http.StatusOK
		if !ready {
			code = http.StatusServiceUnavailable
		}
		return writeJSON(w, code, map[string]bool{"ready": ready})
	})
	route("/v2", http.MethodGet, "v2_server", func(w http.ResponseWriter, _ *http.Request, _ *live) error {
		return writeJSON(w, http.StatusOK, map[string]any{"name": "dimtorch", "version": s.cfg.ServerVersion, "extensions": []string{}})
	})
	for _, prefix := range []string{"/v2/models/{name}", "/v2/models/{name}/versions/{version}"} {
		route(prefix, http.MethodGet, "v2_metadata", s.v2Model(s.handleV2Metadata))
		route(prefix+"/ready", http.MethodGet, "v2_model_ready", s.v2Model(func(w http.ResponseWriter, _ *http.Request, d *live) error {
			return writeJSON(w, http.StatusOK, map[string]any{"name": s.cfg.ModelName, "ready": s.ready.Load()})
		}))
		route(prefix+"/infer", http.MethodPost, "v2_infer", s.v2Model(s.handleV2Infer))
	}
}

// v2Model answers 404 for a model or version the server does not have.
func (s *Server) v2Model(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, d *live) error {
		if name := r.PathValue("name"); name != s.cfg.ModelName {
			return errorf(http.StatusNotFound, "no model %q: this server has %q", name, s.cfg.ModelName)
		}
		if v := r.PathValue("version"); v != "" && v != d.Version {
			return errorf(http.StatusNotFound, "model %q has no version %q: it serves %q", s.cfg.ModelName, v, d.Version)
		}
		return h(w, r, d)
	}
}

func (s *Server) handleV2Metadata(w http.ResponseWriter, _ *http.Request, d *live) error {
	in, out := names(d.Model)
	c, h, wd := d.Model.InputShape()
	md := v2Metadata{Name: s.cfg.ModelName, Platform: "onnxruntime_onnx",
		Inputs: []v2Tensor{
			{Name: in, Datatype: "FP32", Shape: []int64{-1, int64(c), int64(h), int64(wd)}},
			{Name: ImageInput, Datatype: "BYTES", Shape: []int64{-1}},
		},
		Outputs: []v2Tensor{{Name: out, Datatype: "FP32", Shape: []int64{-1, int64(d.Model.Dim())}}},
	}
	if d.Version != "" {
		md.Versions = []string{d.Version}
	}
	return writeJSON(w, http.StatusOK, md)
}

func (s *Server) handleV2Infer(w http.ResponseWriter, r *http.Request, d *live) error {
	d.b.inflight.Add(1)
	defer d.b.inflight.Add(-1)
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	var req v2Request
	_, span := s.step(r.Context(), "read")
	err := json.NewDecoder(r.Body).Decode(&req)
	span.End()
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return errorf(http.StatusRequestEntityTooLarge, "the request is over %d bytes", s.cfg.MaxBody)
		}
		return errorf(http.StatusBadRequest, "the inference request is not the protocol's JSON: %v", err)
	}
	outputs := make([]string, len(req.Outputs))
	for i, o := range req.Outputs {
		outputs[i] = o.Name
	}
	if err := v2Outputs(d, outputs); err != nil {
		return err
	}
	if len(req.Inputs) != 1 {
		return s.v2Inputs(d, len(req.Inputs))
	}
	t := req.Inputs[0]
	images, n, err := s.v2Resolve(d, t.Name, t.Datatype, t.Shape)
	if err != nil {
		return err
	}
	var pixels []float32
	if images {
		pixels, n, err = s.v2Images(r, t, n, d)
	} else {
		pixels, err = v2Pixels(t, n, d)
	}
	if err != nil {
		return err
	}
	vecs, err := s.run(r.Context(), d, pixels, n)
	if err != nil {
		return err
	}
	_, out := names(d.Model)
	flat := make([]float32, 0, n*d.Model.Dim())
	for _, v := range vecs {
		flat = append(flat, v...)
	}
	return writeJSON(w, http.StatusOK, v2Response{ModelName: s.cfg.ModelName, ModelVersion: d.Version, ID: req.ID,
		Outputs: []v2Output{{Name: out, Datatype: "FP32", Shape: []int64{int64(n), int64(d.Model.Dim())}, Data: flat}}})
}

// v2Inputs is the error for a request without exactly one input.
func (s *Server) v2Inputs(d *live, got int) error {
	in, _ := names(d.Model)
	return errorf(http.StatusBadRequest, "%d inputs: give one, %q (FP32 [N, C, H, W]) or %q (BYTES [N], encoded images)", got, in, ImageInput)
}

// v2Outputs checks the outputs an inference request asks for.
func v2Outputs(d *live, outputs []string) error {
	_, out := names(d.Model)
	for _, o := range outputs {
		if o != out {
			return errorf(http.StatusBadRequest, "no output %q: the model has one, %q", o, out)
		}
	}
	return nil
}

// v2Resolve checks an inference request's one input, whatever the
// transport: which input it is (images: the encoded images; else the
// model's FP32 pixels) and its batch size.
func (s *Server) v2Resolve(d *live, name, datatype string, shape []int64) (images bool, n int, err error) {
	in, _ := names(d.Model)
	rank := 4
	switch {
	case name == in && datatype == "FP32":
	case name == ImageInput && datatype == "BYTES":
		images, rank = true, 1
	case name == in || name == ImageInput:
		return false, 0, errorf(http.StatusBadRequest, "input %q is %s, not %s", name, map[string]string{in: "FP32", ImageInput: "BYTES"}[name], datatype)
	default:
		return false, 0, errorf(http.StatusBadRequest, "no input %q: the model takes %q (FP32 [N, C, H, W]) or %q (BYTES [N], encoded images)", name, in, ImageInput)
	}
	if len(shape) != rank {
		return false, 0, errorf(http.StatusBadRequest, "input %q has shape %v: want %d dimensions", name, shape, rank)
	}
	if shape[0] < 1 {
		return false, 0, errorf(http.StatusBadRequest, "input %q has shape %v: want at least one image", name, shape)
	}
	if shape[0] > int64(s.cfg.MaxImages) {
		return false, 0, errorf(http.StatusRequestEntityTooLarge, "input %q holds %d images: at most %d a request", name, shape[0], s.cfg.MaxImages)
	}
	if !images {
		c, h, w := d.Model.InputShape()
		if shape[1] != int64(c) || shape[2] != int64(h) || shape[3] != int64(w) {
			return false, 0, errorf(http.StatusBadRequest, "input %q has shape %v: the model takes [N, %d, %d, %d]", name, shape, c, h, w)
		}
	}
	return images, int(shape[0]), nil
}

// finite checks that x is a value FP32 holds.
func finite(x float64) error {
	if math.IsNaN(x) || math.IsInf(x, 0) || math.Abs(x) > math.MaxFloat32 {
		return fmt.Errorf("%v is not a finite FP32 value", x)
	}
	return nil
}

func v2Pixels(t v2Tensor, n int, d *live) ([]float32, error) {
	c, h, w := d.Model.InputShape()
	want := n * c * h * w
	out := make([]float32, 0, want)
	err := flatten(t.Data, func(raw json.RawMessage) error {
		var x float64
		if err := json.Unmarshal(raw, &x); err != nil {
			return fmt.Errorf("want numbers, found %.20s", raw)
		}
		if err := finite(x); err != nil {
			return err
		}
		if len(out) == want {
			return fmt.Errorf("more than the %d values of shape %v", want, t.Shape)
		}
		out = append(out, float32(x))
		return nil
	})
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "input %q: %v", t.Name, err)
	}
	if len(out) != want {
		return nil, errorf(http.StatusBadRequest, "input %q: %d values for shape %v, which holds %d", t.Name, len(out), t.Shape, want)
	}
	return out, nil
}

func (s *Server) v2Images(r *http.Request, t v2Tensor, n int, d *live) ([]float32, int, error) {
	var files [][]byte
	err := flatten(t.Data, func(raw json.RawMessage) error {
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return fmt.Errorf("want strings (base64 PNG or JPEG files), found %.20s", raw)
		}
		if len(files) == n {
			return fmt.Errorf("more than the %d images of shape %v", n, t.Shape)
		}
		b, err := decodeBase64Image(str)
		if err != nil {
			return fmt.Errorf("image %d: %w", len(files), err)
		}
		files = append(files, b)
		return nil
	})
	if err != nil {
		return nil, 0, errorf(http.StatusBadRequest, "input %q: %v", t.Name, err)
	}
	if len(files) != n {
		return nil, 0, errorf(http.StatusBadRequest, "input %q: %d images for shape %v", t.Name, len(files), t.Shape)
	}
	return s.preprocess(r.Context(), files, d)
}

// flatten calls f on every scalar of a JSON array, nested or flat, in
// row-major order.
func flatten(data json.RawMessage, f func(json.RawMessage) error) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '[' {
		return errors.New(`"data" must be an array`)
	}
	var walk func(json.RawMessage, int) error
	walk = func(v json.RawMessage, depth int) error {
		v = bytes.TrimSpace(v)
		if len(v) > 0 && v[0] == '[' {
			if depth > 8 {
				return errors.New(`"data" is nested deeper than a tensor's dimensions`)
			}
			var items []json.RawMessage
			if err := json.Unmarshal(v, &items); err != nil {
				return err
			}
			for _, it := range items {
				if err := walk(it, depth+1); err != nil {
					return err
				}
			}
			return nil
		}
		return f(v)
	}
	return walk(data, 0)
}
