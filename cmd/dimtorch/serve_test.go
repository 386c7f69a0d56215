package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/dimtorch/dimtorch/serve/inferencepb"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"image"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dimtorch/dimtorch/export"
	"github.com/dimtorch/dimtorch/internal/testcert"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/serve"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/urfave/cli/v2"
)

// dimtorch serve end to end: a gallery folder embedded at start-up, embed
// and neighbour requests, metrics, a taken port, and SIGTERM ending with 0.
func TestServeCommand(t *testing.T) {
	dir := t.TempDir()
	model := exportBasic28(t, dir)
	gallery := filepath.Join(dir, "gallery")
	os.MkdirAll(filepath.Join(gallery, "shirts"), 0o755)
	pngs := map[string][]byte{}
	for i, name := range []string{"shirts/a.png", "shirts/b.png", "c.png"} {
		img := image.NewGray(image.Rect(0, 0, 28, 28))
		for p := range img.Pix {
			img.Pix[p] = uint8((p*(i+3) + 17*i*i) % 256)
		}
		var b bytes.Buffer
		png.Encode(&b, img)
		pngs[name] = b.Bytes()
		os.WriteFile(filepath.Join(gallery, name), b.Bytes(), 0o644)
	}
	cmd, lines, addr, logged := startServe(t, "--model", model, "--gallery", gallery, "--addr", "127.0.0.1:0", "--threads", "1")
	defer cmd.Process.Kill()
	// The model's own preprocessing record is what feeds it.
	loadedLine := false
	for _, l := range logged {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["message"] == "model loaded" {
			loadedLine = true
			if rec["preprocessing_recorded"] != true || fmt.Sprint(rec["resize"]) != "[28x28]" {
				t.Errorf("model loaded: %s", l)
			}
		}
	}
	if !loadedLine {
		t.Errorf("no \"model loaded\" line:\n%s", strings.Join(logged, "\n"))
	}
	rest := make(chan string, 1)
	go func() {
		var b strings.Builder
		for lines.Scan() {
			b.WriteString(lines.Text() + "\n")
		}
		rest <- b.String()
	}()
	base := "http://" + addr
	resp, err := http.Post(base+"/v1/embed", "image/png", bytes.NewReader(pngs["c.png"]))
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Dim        int         `json:"dim"`
		Embeddings [][]float32 `json:"embeddings"`
	}
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != 200 || e.Dim != 64 || len(e.Embeddings) != 1 || len(e.Embeddings[0]) != 64 {
		t.Fatalf("embed: %d %+v", resp.StatusCode, e)
	}
	resp, err = http.Post(base+"/v1/neighbors?k=2", "image/png", bytes.NewReader(pngs["shirts/b.png"]))
	if err != nil {
		t.Fatal(err)
	}
	var n struct {
		Results []struct {
			Neighbors []struct {
				Name       string  `json:"name"`
				Similarity float64 `json:"similarity"`
			} `json:"neighbors"`
		} `json:"results"`
	}
	json.NewDecoder(resp.Body).Decode(&n)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(n.Results) != 1 || len(n.Results[0].Neighbors) != 2 ||
		n.Results[0].Neighbors[0].Name != "shirts/b.png" || n.Results[0].Neighbors[0].Similarity < 0.9999 {
		t.Fatalf("neighbors: %d %+v", resp.StatusCode, n)
	}
	// The Open Inference Protocol: the ONNX graph's own tensor names, and
	// the same vector for the same image as /v1/embed gave.
	resp, err = http.Get(base + "/v2/models/enc")
	if err != nil {
		t.Fatal(err)
	}
	md, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(md), `{"name":"image","datatype":"FP32","shape":[-1,1,28,28]}`) ||
		!strings.Contains(string(md), `"outputs":[{"name":"y","datatype":"FP32","shape":[-1,64]}]`) {
		t.Fatalf("v2 metadata: %d %s", resp.StatusCode, md)
	}
	v2req, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{"name": "encoded_image", "datatype": "BYTES", "shape": []int{1},
		"data": []string{base64.StdEncoding.EncodeToString(pngs["c.png"])}}}})
	resp, err = http.Post(base+"/v2/models/enc/infer", "application/json", bytes.NewReader(v2req))
	if err != nil {
		t.Fatal(err)
	}
	var v2 struct {
		Outputs []struct {
			Shape []int     `json:"shape"`
			Data  []float32 `json:"data"`
		} `json:"outputs"`
	}
	json.NewDecoder(resp.Body).Decode(&v2)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(v2.Outputs) != 1 || len(v2.Outputs[0].Data) != 64 {
		t.Fatalf("v2 infer: %d %+v", resp.StatusCode, v2)
	}
	for i, x := range v2.Outputs[0].Data {
		if x != e.Embeddings[0][i] {
			t.Fatalf("v2 infer value %d: %v, /v1/embed gave %v", i, x, e.Embeddings[0][i])
		}
	}
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`dimtorch_serve_requests_total{code="200",route="embed"} 1`, "dimtorch_serve_model_load_seconds", "dimtorch_serve_batch_size_bucket"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The same port again: a clear error.
	if _, stderr, code := run(t, "serve", "--model", model, "--addr", addr); code == 0 || !strings.Contains(stderr, "is in use") {
		t.Errorf("taken port: %d %s", code, stderr)
	}
	// A real SIGTERM with a request in flight: its headers and half its body
	// are sent, then the signal, then the rest; it must be answered with 200
	// before the process exits.
	img := pngs["shirts/b.png"]
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n", len(img))
	conn.Write(img[:len(img)/2])
	time.Sleep(100 * time.Millisecond) // the server has read the headers: the request is in flight
	cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond) // the shutdown has begun
	if _, err := conn.Write(img[len(img)/2:]); err != nil {
		t.Fatalf("the connection of the request in flight was closed by SIGTERM: %v", err)
	}
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 200") {
		t.Fatalf("the request in flight at SIGTERM got %q (%v)", status, err)
	}
	var log string
	select {
	case log = <-rest: // the log ends when the process exits
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop after SIGTERM")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v\n%s", err, log)
	}
	if !strings.Contains(log, `"stopped"`) {
		t.Errorf("no orderly stop in the log:\n%s", log)
	}
}

// exportBasic28 writes a randomly initialised basic28 (seed 3) as
// DIR/enc.onnx.
func exportBasic28(t *testing.T, dir string) string {
	t.Helper()
	return exportBasic28Seed(t, filepath.Join(dir, "enc.onnx"), 3)
}

// exportBasic28Seed exports an untrained basic28 initialised from seed to
// the file model.
func exportBasic28Seed(t *testing.T, model string, seed uint64) string {
	t.Helper()
	_ = torch.ManualSeed(seed)
	enc, err := models.New(models.Config{Name: "basic28", InChannels: 1})
	if err != nil {
		t.Fatal(err)
	}
	enc.Train(false)
	m, err := export.Model(enc, export.Options{})
	nn.Free(enc)
	if err != nil {
		t.Fatal(err)
	}
	if err := export.Write(model, m); err != nil {
		t.Fatal(err)
	}
	return model
}

// startServe starts `dimtorch --log-format json serve ARGS...` and reads
// its log up to the "serving" line: the process, the rest of its log, the
// address it serves and the lines read.
func startServe(t *testing.T, args ...string) (*exec.Cmd, *bufio.Scanner, string, []string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"--log-format", "json", "serve"}, args...)...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stderr)
	var addr string
	var logged []string
	for addr == "" && lines.Scan() {
		logged = append(logged, lines.Text())
		var rec map[string]any
		if json.Unmarshal(lines.Bytes(), &rec) == nil && rec["message"] == "serving" {
			addr, _ = rec["addr"].(string)
		}
	}
	if addr == "" {
		cmd.Process.Kill()
		t.Fatalf("no serving line:\n%s", strings.Join(logged, "\n"))
	}
	return cmd, lines, addr, logged
}

// waitLog reads log lines until one has message msg, and returns it.
func waitLog(t *testing.T, lines *bufio.Scanner, msg string) map[string]any {
	t.Helper()
	var seen []string
	for lines.Scan() {
		seen = append(seen, lines.Text())
		var rec map[string]any
		if json.Unmarshal(lines.Bytes(), &rec) == nil && rec["message"] == msg {
			return rec
		}
	}
	t.Fatalf("no %q line in the log:\n%s", msg, strings.Join(seen, "\n"))
	return nil
}

// dimtorch serve with an API key file, TLS and a metrics listener, as a
// deployment runs it: keys and certificate rotated by SIGHUP without a
// restart, a bad key file on SIGHUP logged and the old keys kept, no key
// in the log, and the start-up errors of half-given or bad access flags.
func TestServeAccess(t *testing.T) {
	dir := t.TempDir()
	model := exportBasic28(t, dir)
	const key1, key2 = "first-key-0123456789abcdef", "second-key-0123456789abcdef"
	keyFile := filepath.Join(dir, "keys")
	os.WriteFile(keyFile, []byte(key1+"\n"), 0o600)
	certFile, certKey, cert1 := testcert.Write(t, dir, 1)
	ml, _ := net.Listen("tcp", "127.0.0.1:0") // a free port for the metrics
	maddr := ml.Addr().String()
	ml.Close()
	cmd, lines, addr, _ := startServe(t, "--model", model, "--addr", "127.0.0.1:0", "--threads", "1",
		"--api-key-file", keyFile, "--tls-cert", certFile, "--tls-key", certKey, "--metrics-addr", maddr)
	defer cmd.Process.Kill()
	var log strings.Builder
	logLine := func(msg string) map[string]any {
		rec := waitLog(t, lines, msg)
		b, _ := json.Marshal(rec)
		log.Write(b)
		return rec
	}
	img := grayPNGBytes(t)
	embed := func(c *http.Client, key string) int {
		req, _ := http.NewRequest("POST", "https://"+addr+"/v1/embed", bytes.NewReader(img))
		req.Header.Set("Content-Type", "image/png")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	c1 := testcert.Client(cert1, true)
	if code := embed(c1, ""); code != 401 {
		t.Fatalf("no key: %d", code)
	}
	if code := embed(c1, key1); code != 200 {
		t.Fatalf("key1 over HTTPS: %d", code)
	}
	resp, err := c1.Get("https://" + addr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz without a key: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `dimtorch_serve_requests_total{code="401",route="embed"} 1`) {
		t.Fatalf("metrics listener: %.400s", body)
	}

	// Rotation by SIGHUP: key2 and a new certificate.
	os.WriteFile(keyFile, []byte(key2+"\n"), 0o600)
	_, _, cert2 := testcert.Write(t, dir, 2)
	cmd.Process.Signal(syscall.SIGHUP)
	logLine("SIGHUP: API keys reloaded")
	logLine("SIGHUP: TLS certificate reloaded")
	c2 := testcert.Client(cert2, true)
	if code := embed(c2, key1); code != 401 {
		t.Fatalf("key1 after rotation: %d", code)
	}
	if code := embed(c2, key2); code != 200 {
		t.Fatalf("key2 after rotation: %d", code)
	}
	// c1 trusts only the first certificate: it gets through only on the
	// connection it opened before the rotation, which must still be up.
	if code := embed(c1, key2); code != 200 {
		t.Fatalf("key2 on the connection opened before the rotation: %d", code)
	}
	// A bad key file: logged, key2 stays.
	os.WriteFile(keyFile, []byte("short\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	if rec := logLine("SIGHUP: the API keys were not reloaded; the previous keys stay in force"); !strings.Contains(fmt.Sprint(rec["error"]), "line 1") {
		t.Fatalf("the reason: %v", rec)
	}
	if code := embed(c2, key2); code != 200 {
		t.Fatalf("key2 after a failed reload: %d", code)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	logLine("stopped")
	for lines.Scan() {
		log.WriteString(lines.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
	for _, k := range []string{key1, key2} {
		if strings.Contains(log.String(), k) {
			t.Fatalf("a key in the log: %s", log.String())
		}
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", certFile}, "--tls-cert and --tls-key go together"},
		{[]string{"--api-key-file", keyFile}, "--api-key-file: API key file " + keyFile + ", line 1: a key of 5 bytes"},
		{[]string{"--api-key-file", filepath.Join(dir, "none")}, "no such file"},
		{[]string{"--tls-cert", keyFile, "--tls-key", certKey}, "TLS certificate " + keyFile},
	} {
		_, stderr, code := run(t, append([]string{"serve", "--model", model, "--addr", "127.0.0.1:0"}, tc.args...)...)
		if code == 0 || !strings.Contains(stderr, tc.want) || strings.Contains(stderr, "panic") {
			t.Errorf("%v: exit %d, %s", tc.args, code, stderr)
		}
	}
}

func grayPNGBytes(t *testing.T) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 28, 28))
	for p := range img.Pix {
		img.Pix[p] = uint8(p % 256)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// dimtorch serve's flags default to the service's own defaults
// (serve.DefaultConfig), written once.
func TestServeFlagDefaults(t *testing.T) {
	d := serve.DefaultConfig()
	want := map[string]any{
		"batching": d.Batching, "runners": d.Runners, "max-batch": d.MaxBatch, "max-wait": d.MaxWait, "max-queue": d.MaxQueue,
		"max-body": d.MaxBody, "max-pixels": d.MaxPixels, "max-images": d.MaxImages,
		"read-header-timeout": d.ReadHeaderTimeout, "read-timeout": d.ReadTimeout, "write-timeout": d.WriteTimeout,
		"idle-timeout": d.IdleTimeout, "shutdown-timeout": d.ShutdownTimeout,
	}
	seen := 0
	for _, f := range serveCommand().Flags {
		name := f.Names()[0]
		w, ok := want[name]
		if !ok {
			continue
		}
		seen++
		var got any
		switch f := f.(type) {
		case *cli.BoolFlag:
			got = f.Value
		case *cli.IntFlag:
			got = f.Value
		case *cli.Int64Flag:
			got = f.Value
		case *cli.DurationFlag:
			got = f.Value
		}
		if got != w {
			t.Errorf("--%s defaults to %v, serve's default is %v", name, got, w)
		}
	}
	if seen != len(want) {
		t.Errorf("%d of the %d flags found", seen, len(want))
	}
}

// Model reload in a real process: POST /v1/admin/reload to another file,
// a damaged file refused with the model kept, and SIGHUP re-reading the
// file in place. Every answer names the SHA-256 of the file that computed
// it, and a gallery folder is embedded again with each new model.
func TestServeReload(t *testing.T) {
	dir := t.TempDir()
	m1 := exportBasic28Seed(t, filepath.Join(dir, "one.onnx"), 3)
	m2 := exportBasic28Seed(t, filepath.Join(dir, "two.onnx"), 4)
	version := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		return hex.EncodeToString(sum[:])[:16]
	}
	v1, v2 := version(m1), version(m2)
	gallery := filepath.Join(dir, "gallery")
	os.MkdirAll(gallery, 0o755)
	img := grayPNGBytes(t)
	os.WriteFile(filepath.Join(gallery, "a.png"), img, 0o644)
	const key = "reload-key-0123456789abcdef"
	keyFile := filepath.Join(dir, "keys")
	os.WriteFile(keyFile, []byte(key+"\n"), 0o600)
	cmd, lines, addr, logged := startServe(t, "--model", m1, "--gallery", gallery, "--addr", "127.0.0.1:0", "--threads", "1", "--api-key-file", keyFile,
		"--grpc-addr", "127.0.0.1:0")
	defer cmd.Process.Kill()
	const grpcLine = "serving gRPC (Open Inference Protocol)"
	var grpcAddr string
	for _, l := range logged {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["message"] == grpcLine {
			grpcAddr, _ = rec["addr"].(string)
		}
	}
	if grpcAddr == "" {
		grpcAddr, _ = waitLog(t, lines, grpcLine)["addr"].(string)
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	oip := inferencepb.NewGRPCInferenceServiceClient(conn)
	// inferGRPC embeds img over gRPC: the vector as JSON, and the version.
	inferGRPC := func() (string, string) {
		t.Helper()
		var header metadata.MD
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key)
		r, err := oip.ModelInfer(ctx, &inferencepb.ModelInferRequest{ModelName: "one", Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
			{Name: "encoded_image", Datatype: "BYTES", Shape: []int64{1}, Contents: &inferencepb.InferTensorContents{BytesContents: [][]byte{img}}}}},
			grpc.Header(&header))
		if err != nil || len(r.GetOutputs()) != 1 {
			t.Fatalf("gRPC ModelInfer: %v %v", r, err)
		}
		b, _ := json.Marshal(map[string]any{"dim": 64, "embeddings": [][]float32{r.GetOutputs()[0].GetContents().GetFp32Contents()}})
		if v := header.Get("dimtorch-model-version"); len(v) != 1 || v[0] != r.GetModelVersion() {
			t.Fatalf("gRPC version %v in the header, %q in the answer", v, r.GetModelVersion())
		}
		return string(b), r.GetModelVersion()
	}
	base := "http://" + addr
	call := func(path string, body []byte, ct string) (int, string, []byte) {
		req, _ := http.NewRequest("POST", base+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Dimtorch-Model-Version"), b
	}
	embedOnce := func(want string) string {
		t.Helper()
		code, v, body := call("/v1/embed", img, "image/png")
		if code != 200 || v != want {
			t.Fatalf("embed: %d, version %q, want %q: %s", code, v, want, body)
		}
		// The gallery holds this very image: its neighbour is itself, so the
		// gallery was embedded by the model answering.
		code, _, nb := call("/v1/neighbors?k=1", img, "image/png")
		var n struct {
			Results []struct {
				Neighbors []struct {
					Similarity float64 `json:"similarity"`
				} `json:"neighbors"`
			} `json:"results"`
		}
		if code != 200 || json.Unmarshal(nb, &n) != nil || len(n.Results) != 1 || len(n.Results[0].Neighbors) != 1 ||
			n.Results[0].Neighbors[0].Similarity < 0.9999 {
			t.Fatalf("neighbors under %s: %d %s", want, code, nb)
		}
		return string(body)
	}
	e1 := embedOnce(v1)
	if g, v := inferGRPC(); strings.TrimSpace(g) != strings.TrimSpace(e1) || v != v1 {
		t.Fatalf("gRPC (version %s): %s\n/v1/embed: %s", v, g, e1)
	}

	code, v, body := call("/v1/admin/reload", []byte(`{"model": "`+m2+`"}`), "application/json")
	if code != 200 || v != v2 || !strings.Contains(string(body), `"previous":"`+v1+`"`) {
		t.Fatalf("reload to %s: %d %q %s", m2, code, v, body)
	}
	waitLog(t, lines, "model reloaded")
	e2 := embedOnce(v2)
	if e2 == e1 {
		t.Fatal("the second model embeds as the first")
	}
	if g, v := inferGRPC(); strings.TrimSpace(g) != strings.TrimSpace(e2) || v != v2 {
		t.Fatalf("gRPC after the reload (version %s): %s\n/v1/embed: %s", v, g, e2)
	}

	bad := filepath.Join(dir, "bad.onnx")
	os.WriteFile(bad, []byte("not an onnx file"), 0o644)
	code, _, body = call("/v1/admin/reload", []byte(`{"model": "`+bad+`"}`), "application/json")
	if code != 422 || !strings.Contains(string(body), "previous model stays") {
		t.Fatalf("reload of a damaged file: %d %s", code, body)
	}
	embedOnce(v2)

	// SIGHUP reloads the files being served: two.onnx, now with one's bytes.
	b1, _ := os.ReadFile(m1)
	os.WriteFile(m2, b1, 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	if rec := waitLog(t, lines, "model reloaded"); rec["version"] != v1 || rec["previous"] != v2 {
		t.Fatalf("SIGHUP: %v", rec)
	}
	if e := embedOnce(v1); e != e1 {
		t.Fatal("the first model's bytes embed differently after the reload")
	}
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after reloads: %v", err)
	}
}

// --otlp-endpoint: a real process exports its request spans over
// OTLP/HTTP to a collector (here a test server decoding the protocol's
// protobuf), continuing the client's trace, and flushes them on SIGTERM.
func TestServeExportsTraces(t *testing.T) {
	dir := t.TempDir()
	model := exportBasic28(t, dir)
	got := make(chan *coltracepb.ExportTraceServiceRequest, 16)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(body, &req) != nil {
			t.Errorf("the collector got %s %s (%s)", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		got <- &req
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Write(b)
	}))
	defer collector.Close()
	cmd, _, addr, _ := startServe(t, "--model", model, "--addr", "127.0.0.1:0", "--threads", "1", "--otlp-endpoint", collector.URL)
	defer cmd.Process.Kill()
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/embed", bytes.NewReader(grayPNGBytes(t)))
	req.Header.Set("Content-Type", "image/png")
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
	names := map[string]bool{}
	service := ""
	for len(got) > 0 {
		for _, rs := range (<-got).GetResourceSpans() {
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.name" {
					service = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					if hex.EncodeToString(sp.GetTraceId()) == traceID {
						names[sp.GetName()] = true
					}
				}
			}
		}
	}
	for _, want := range []string{"POST embed", "read", "decode", "queue", "model run"} {
		if !names[want] {
			t.Errorf("no %q span of the client's trace reached the collector (got %v)", want, names)
		}
	}
	if service != "dimtorch-serve" {
		t.Errorf("service.name %q", service)
	}
}
