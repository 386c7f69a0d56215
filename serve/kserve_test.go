package serve

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// The specification's own example request (inference_rest.md, "Inference
// Request Examples"), word for word but for the whitespace.
const specExampleRequest = `{
  "id" : "42",
  "inputs" : [
    { "name" : "input0", "shape" : [ 2, 2 ], "datatype" : "UINT32", "data" : [ 1, 2, 3, 4 ] },
    { "name" : "input1", "shape" : [ 3 ], "datatype" : "BOOL", "data" : [ true ] }
  ],
  "outputs" : [ { "name" : "output0" } ]
}`

// The response schema of the specification ($inference_response,
// $response_output): a decoder that refuses any other field.
type specResponse struct {
	ModelName    string `json:"model_name"`
	ModelVersion string `json:"model_version"`
	ID           string `json:"id"`
	Parameters   any    `json:"parameters"`
	Outputs      []struct {
		Name       string    `json:"name"`
		Shape      []int64   `json:"shape"`
		Datatype   string    `json:"datatype"`
		Parameters any       `json:"parameters"`
		Data       []float64 `json:"data"`
	} `json:"outputs"`
}

func v2Server(t *testing.T) *httptest.Server {
	t.Helper()
	s, err := New(Deployment{Model: &fakeModel{}, Version: "v7"}, Config{ModelName: "mymodel", ServerVersion: "1.2.3", MaxImages: 4, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	s.SetReady(true)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() { ts.Close(); s.Close() })
	return ts
}

func v2Call(t *testing.T, method, url, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			t.Fatalf("%s %s: %d without the protocol's error object: %s", method, url, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, b
}

func TestOpenInferenceProtocolREST(t *testing.T) {
	ts := v2Server(t)
	// The spec's example request, sent as is: our model has neither of its
	// inputs, and says which it has.
	code, body := v2Call(t, "POST", ts.URL+"/v2/models/mymodel/infer", specExampleRequest)
	if code != 400 || !strings.Contains(string(body), `output0`) {
		t.Fatalf("the spec's example request: %d %s", code, body)
	}
	// The same request with this model's tensors: two 8x8 grey images, the
	// second brighter; the response follows the spec's example response.
	pix := make([]float64, 2*64)
	for i := 64; i < 128; i++ {
		pix[i] = 0.5
	}
	flat, _ := json.Marshal(pix)
	req := `{"id": "42", "inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": ` + string(flat) + `}],
	  "outputs": [{"name": "y"}]}`
	code, body = v2Call(t, "POST", ts.URL+"/v2/models/mymodel/infer", req)
	var r specResponse
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if code != 200 || dec.Decode(&r) != nil {
		t.Fatalf("infer: %d %s", code, body)
	}
	if r.ID != "42" || r.ModelName != "mymodel" || r.ModelVersion != "v7" || len(r.Outputs) != 1 || r.Outputs[0].Name != "y" ||
		r.Outputs[0].Datatype != "FP32" || len(r.Outputs[0].Shape) != 2 || r.Outputs[0].Shape[0] != 2 || r.Outputs[0].Shape[1] != 2 ||
		len(r.Outputs[0].Data) != 4 {
		t.Fatalf("infer: %s", body)
	}
	// fakeModel: [mean pixel, batch size] per image, row-major.
	if d := r.Outputs[0].Data; d[0] != 0 || d[1] != 2 || math.Abs(d[2]-0.5) > 1e-6 || d[3] != 2 {
		t.Fatalf("infer data: %v", d)
	}
	// Nested data (the spec allows either form) gives the same answer.
	nested := make([][][][]float64, 2)
	for i := range nested {
		nested[i] = [][][]float64{make([][]float64, 8)}
		for y := range nested[i][0] {
			nested[i][0][y] = pix[i*64+y*8 : i*64+y*8+8]
		}
	}
	nb, _ := json.Marshal(nested)
	code, body2 := v2Call(t, "POST", ts.URL+"/v2/models/mymodel/versions/v7/infer",
		`{"inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": `+string(nb)+`}]}`)
	var r2 specResponse
	if code != 200 || json.Unmarshal(body2, &r2) != nil || len(r2.Outputs) != 1 || !equalFloats(r2.Outputs[0].Data, r.Outputs[0].Data) || r2.ID != "" {
		t.Fatalf("nested data: %d %s", code, body2)
	}
	// BYTES: encoded images, as /v1/embed takes them.
	imgs, _ := json.Marshal([]string{base64.StdEncoding.EncodeToString(grayPNG(t, 255)),
		"data:image/png;base64," + base64.StdEncoding.EncodeToString(grayPNG(t, 0))})
	code, body = v2Call(t, "POST", ts.URL+"/v2/models/mymodel/infer",
		`{"inputs": [{"name": "encoded_image", "shape": [2], "datatype": "BYTES", "data": `+string(imgs)+`}]}`)
	var r3 specResponse
	if code != 200 || json.Unmarshal(body, &r3) != nil || !equalFloats(r3.Outputs[0].Data, []float64{1, 2, 0, 2}) {
		t.Fatalf("BYTES images: %d %s", code, body)
	}

	// Metadata, health and readiness.
	code, body = v2Call(t, "GET", ts.URL+"/v2/models/mymodel", "")
	var md struct {
		Name     string   `json:"name"`
		Versions []string `json:"versions"`
		Platform string   `json:"platform"`
		Inputs   []struct {
			Name     string  `json:"name"`
			Datatype string  `json:"datatype"`
			Shape    []int64 `json:"shape"`
		} `json:"inputs"`
		Outputs []struct {
			Name     string  `json:"name"`
			Datatype string  `json:"datatype"`
			Shape    []int64 `json:"shape"`
		} `json:"outputs"`
	}
	dec = json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if code != 200 || dec.Decode(&md) != nil || md.Name != "mymodel" || len(md.Versions) != 1 || md.Versions[0] != "v7" ||
		len(md.Inputs) != 2 || md.Inputs[0].Name != "input" || md.Inputs[0].Datatype != "FP32" ||
		!slices.Equal(md.Inputs[0].Shape, []int64{-1, 1, 8, 8}) || md.Inputs[1].Name != "encoded_image" || md.Inputs[1].Datatype != "BYTES" ||
		len(md.Outputs) != 1 || md.Outputs[0].Name != "y" || !slices.Equal(md.Outputs[0].Shape, []int64{-1, 2}) {
		t.Fatalf("metadata: %d %s", code, body)
	}
	for url, want := range map[string]string{
		"/v2/health/live": `{"live":true}`, "/v2/health/ready": `{"ready":true}`,
		"/v2/models/mymodel/ready": `{"name":"mymodel","ready":true}`, "/v2/models/mymodel/versions/v7/ready": `{"name":"mymodel","ready":true}`,
		"/v2": `{"extensions":[],"name":"dimtorch","version":"1.2.3"}`,
	} {
		if code, body := v2Call(t, "GET", ts.URL+url, ""); code != 200 || strings.TrimSpace(string(body)) != want {
			t.Errorf("GET %s: %d %s, want %s", url, code, body, want)
		}
	}

	// What the protocol says is an error, with its error object.
	for _, tc := range []struct {
		method, path, body string
		code               int
		says               string
	}{
		{"GET", "/v2/models/other", "", 404, `no model \"other\"`},
		{"POST", "/v2/models/mymodel/versions/v6/infer", req, 404, `no version \"v6\"`},
		{"GET", "/v2/models/mymodel/infer", "", 405, "takes POST"},
		{"POST", "/v2/models/mymodel/infer", `{"inputs": [`, 400, "not the protocol's JSON"},
		{"POST", "/v2/models/mymodel/infer", `{"inputs": []}`, 400, "0 inputs"},
		{"POST", "/v2/models/mymodel/infer", strings.Replace(req, `"y"`, `"conv"`, 1), 400, `no output \"conv\"`},
		{"POST", "/v2/models/mymodel/infer", strings.Replace(req, `"FP32"`, `"FP64"`, 1), 400, "is FP32, not FP64"},
		{"POST", "/v2/models/mymodel/infer", strings.Replace(req, `[2, 1, 8, 8]`, `[2, 1, 8, 7]`, 1), 400, "the model takes [N, 1, 8, 8]"},
		{"POST", "/v2/models/mymodel/infer", strings.Replace(req, `[2, 1, 8, 8]`, `[3, 1, 8, 8]`, 1), 400, "128 values for shape [3 1 8 8]"},
		{"POST", "/v2/models/mymodel/infer", strings.Replace(req, `[2, 1, 8, 8]`, `[1, 1, 8, 8]`, 1), 400, "more than the 64 values"},
		{"POST", "/v2/models/mymodel/infer", strings.Replace(req, `[2, 1, 8, 8]`, `[9, 1, 8, 8]`, 1), 413, "at most 4"},
		{"POST", "/v2/models/mymodel/infer", strings.Replace(req, `[0,0,`, `["a",0,`, 1), 400, "want numbers"},
		{"POST", "/v2/models/mymodel/infer", strings.Replace(req, `[0,0,`, `[1e39,0,`, 1), 400, "not a finite FP32"},
		{"POST", "/v2/models/mymodel/infer", `{"inputs": [{"name": "encoded_image", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]}`, 400, "not base64"},
		{"POST", "/v2/models/mymodel/infer", `{"inputs": [{"name": "encoded_image", "shape": [1], "datatype": "BYTES", "data": ["` +
			base64.StdEncoding.EncodeToString([]byte("not a png")) + `"]}]}`, 415, "PNG or JPEG"},
	} {
		code, body := v2Call(t, tc.method, ts.URL+tc.path, tc.body)
		if code != tc.code || !strings.Contains(string(body), tc.says) {
			t.Errorf("%s %s %.60s: %d %s, want %d saying %q", tc.method, tc.path, tc.body, code, body, tc.code, tc.says)
		}
	}
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-6 {
			return false
		}
	}
	return true
}
