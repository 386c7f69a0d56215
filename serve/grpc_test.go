package serve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/internal/testcert"
	"github.com/dimtorch/dimtorch/serve/inferencepb"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// grpcServer serves the protocol's gRPC form for a fakeModel named
// "mymodel" at version "v7", with keyA required and cfg's TLS, and returns
// a client of the stubs generated from the same .proto.
func grpcServer(t *testing.T, cert *Certificate, creds credentials.TransportCredentials) inferencepb.GRPCInferenceServiceClient {
	t.Helper()
	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, []byte(keyA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := LoadAPIKeys(file)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Deployment{Model: &fakeModel{}, Version: "v7"}, Config{ModelName: "mymodel", ServerVersion: "1.2.3", MaxImages: 4,
		APIKeys: keys, TLS: cert, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	s.SetReady(true)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeGRPC(ctx, l) }()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		s.Close()
	})
	return inferencepb.NewGRPCInferenceServiceClient(conn)
}

func withKey(key string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key)
}

func TestOpenInferenceProtocolGRPC(t *testing.T) {
	c := grpcServer(t, nil, insecure.NewCredentials())
	bg := context.Background()
	// Health stays open; the rest needs a key.
	if r, err := c.ServerLive(bg, &inferencepb.ServerLiveRequest{}); err != nil || !r.GetLive() {
		t.Fatalf("ServerLive: %v %v", r, err)
	}
	if r, err := c.ServerReady(bg, &inferencepb.ServerReadyRequest{}); err != nil || !r.GetReady() {
		t.Fatalf("ServerReady: %v %v", r, err)
	}
	if _, err := c.ModelMetadata(bg, &inferencepb.ModelMetadataRequest{Name: "mymodel"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("ModelMetadata without a key: %v", err)
	}
	if _, err := c.ModelMetadata(withKey(keyA+"x"), &inferencepb.ModelMetadataRequest{Name: "mymodel"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("ModelMetadata with a wrong key: %v", err)
	}
	md, err := c.ModelMetadata(withKey(keyA), &inferencepb.ModelMetadataRequest{Name: "mymodel"})
	if err != nil || md.GetName() != "mymodel" || len(md.GetInputs()) != 2 || md.GetInputs()[0].GetName() != "input" ||
		!slices.Equal(md.GetInputs()[0].GetShape(), []int64{-1, 1, 8, 8}) || md.GetInputs()[1].GetDatatype() != "BYTES" ||
		len(md.GetOutputs()) != 1 || !slices.Equal(md.GetOutputs()[0].GetShape(), []int64{-1, 2}) || len(md.GetVersions()) != 1 {
		t.Fatalf("ModelMetadata: %v %v", md, err)
	}
	sm, err := c.ServerMetadata(withKey(keyA), &inferencepb.ServerMetadataRequest{})
	if err != nil || sm.GetName() != "dimtorch" || sm.GetVersion() != "1.2.3" {
		t.Fatalf("ServerMetadata: %v %v", sm, err)
	}
	if r, err := c.ModelReady(withKey(keyA), &inferencepb.ModelReadyRequest{Name: "mymodel", Version: "v7"}); err != nil || !r.GetReady() {
		t.Fatalf("ModelReady: %v %v", r, err)
	}

	// Two 8x8 images, the second at 0.5: fakeModel answers [mean, batch].
	pix := make([]float32, 128)
	for i := 64; i < 128; i++ {
		pix[i] = 0.5
	}
	want := []float64{0, 2, 0.5, 2}
	fp32 := func(shape []int64, data []float32) *inferencepb.ModelInferRequest {
		return &inferencepb.ModelInferRequest{ModelName: "mymodel", Id: "42", Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
			{Name: "input", Datatype: "FP32", Shape: shape, Contents: &inferencepb.InferTensorContents{Fp32Contents: data}}}}
	}
	var header metadata.MD
	r, err := c.ModelInfer(withKey(keyA), fp32([]int64{2, 1, 8, 8}, pix), grpc.Header(&header))
	if err != nil || r.GetId() != "42" || r.GetModelName() != "mymodel" || r.GetModelVersion() != "v7" || len(r.GetOutputs()) != 1 ||
		!slices.Equal(r.GetOutputs()[0].GetShape(), []int64{2, 2}) || !equalFloats(f64(r.GetOutputs()[0].GetContents().GetFp32Contents()), want) {
		t.Fatalf("ModelInfer: %v %v", r, err)
	}
	if v := header.Get(grpcVersionKey); len(v) != 1 || v[0] != "v7" {
		t.Fatalf("the version in the header metadata: %v", header)
	}
	// Raw contents in, raw contents out.
	raw := make([]byte, 0, 4*len(pix))
	for _, x := range pix {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(x))
	}
	rq := fp32([]int64{2, 1, 8, 8}, nil)
	rq.Inputs[0].Contents = nil
	rq.RawInputContents = [][]byte{raw}
	r, err = c.ModelInfer(withKey(keyA), rq)
	if err != nil || len(r.GetRawOutputContents()) != 1 || len(r.GetRawOutputContents()[0]) != 16 {
		t.Fatalf("raw ModelInfer: %v %v", r, err)
	}
	got := make([]float64, 4)
	for i := range got {
		got[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(r.GetRawOutputContents()[0][4*i:])))
	}
	if !equalFloats(got, want) {
		t.Fatalf("raw ModelInfer values: %v", got)
	}
	// Encoded images: bytes_contents, and raw with length prefixes.
	bright, dark := grayPNG(t, 255), grayPNG(t, 0)
	images := &inferencepb.ModelInferRequest{ModelName: "mymodel", Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
		{Name: "encoded_image", Datatype: "BYTES", Shape: []int64{2}, Contents: &inferencepb.InferTensorContents{BytesContents: [][]byte{bright, dark}}}}}
	r, err = c.ModelInfer(withKey(keyA), images)
	if err != nil || !equalFloats(f64(r.GetOutputs()[0].GetContents().GetFp32Contents()), []float64{1, 2, 0, 2}) {
		t.Fatalf("BYTES ModelInfer: %v %v", r, err)
	}
	var prefixed []byte
	for _, b := range [][]byte{bright, dark} {
		prefixed = binary.LittleEndian.AppendUint32(prefixed, uint32(len(b)))
		prefixed = append(prefixed, b...)
	}
	images.Inputs[0].Contents = nil
	images.RawInputContents = [][]byte{prefixed}
	r, err = c.ModelInfer(withKey(keyA), images)
	if err != nil || len(r.GetRawOutputContents()) != 1 {
		t.Fatalf("raw BYTES ModelInfer: %v %v", r, err)
	}

	// Errors carry the codes a gRPC client expects.
	for _, tc := range []struct {
		name string
		req  *inferencepb.ModelInferRequest
		code codes.Code
		says string
	}{
		{"another model", &inferencepb.ModelInferRequest{ModelName: "other"}, codes.NotFound, `no model "other"`},
		{"another version", &inferencepb.ModelInferRequest{ModelName: "mymodel", ModelVersion: "v6"}, codes.NotFound, `no version "v6"`},
		{"no input", &inferencepb.ModelInferRequest{ModelName: "mymodel"}, codes.InvalidArgument, "0 inputs"},
		{"wrong shape", fp32([]int64{2, 1, 8, 7}, pix), codes.InvalidArgument, "the model takes [N, 1, 8, 8]"},
		{"too few values", fp32([]int64{2, 1, 8, 8}, pix[:100]), codes.InvalidArgument, "100 values"},
		{"too many images", fp32([]int64{5, 1, 8, 8}, make([]float32, 320)), codes.ResourceExhausted, "at most 4"},
		{"NaN", fp32([]int64{1, 1, 8, 8}, append([]float32{float32(math.NaN())}, make([]float32, 63)...)), codes.InvalidArgument, "not a finite"},
		{"not an image", &inferencepb.ModelInferRequest{ModelName: "mymodel", Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
			{Name: "encoded_image", Datatype: "BYTES", Shape: []int64{1}, Contents: &inferencepb.InferTensorContents{BytesContents: [][]byte{[]byte("text")}}}}},
			codes.InvalidArgument, "PNG or JPEG"},
	} {
		_, err := c.ModelInfer(withKey(keyA), tc.req)
		if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.says) {
			t.Errorf("%s: %v, want %v saying %q", tc.name, err, tc.code, tc.says)
		}
	}
}

// The gRPC listener speaks TLS with the server's certificate.
func TestOpenInferenceProtocolGRPCOverTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, x := testcert.Write(t, dir, 1)
	cert, err := LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(x)
	c := grpcServer(t, cert, credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}))
	md, err := c.ModelMetadata(withKey(keyA), &inferencepb.ModelMetadataRequest{Name: "mymodel"})
	if err != nil || md.GetName() != "mymodel" {
		t.Fatalf("ModelMetadata over TLS: %v %v", md, err)
	}
	// A client that does not trust the certificate gets nowhere.
	bad := grpcServer(t, cert, credentials.NewTLS(&tls.Config{RootCAs: x509.NewCertPool(), ServerName: "127.0.0.1"}))
	if _, err := bad.ServerLive(context.Background(), &inferencepb.ServerLiveRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("an untrusted certificate: %v", err)
	}
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
