package serve

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/dimtorch/dimtorch/serve/inferencepb"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

const (
	parentTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpan  = "00f067aa0ba902b7"
)

func attr(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// children returns the spans whose parent is p, by name.
func children(spans tracetest.SpanStubs, p trace.SpanContext) map[string]sdktrace.ReadOnlySpan {
	out := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans.Snapshots() {
		if s.Parent().SpanID() == p.SpanID() {
			out[s.Name()] = s
		}
	}
	return out
}

// A /v1/neighbors request continues the client's W3C trace: its server
// span is the child of the traceparent sent, with read, decode, queue,
// model run and search under it, in that order in time, the run's batch
// size recorded. gRPC calls are traced the same way from their metadata.
func TestTracing(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	g, err := NewGallery([]string{"a", "b"}, [][]float32{{1, 1}, {0, 1}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Deployment{Model: &fakeModel{delay: 5 * time.Millisecond}, Gallery: g, Version: "v7"},
		Config{ModelName: "mymodel", TracerProvider: tp, Batching: true, MaxWait: 20 * time.Millisecond, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	s.SetReady(true)
	ts := httptest.NewServer(s.Handler())
	defer func() { ts.Close(); s.Close() }()

	req, _ := http.NewRequest("POST", ts.URL+"/v1/neighbors?k=1", bytes.NewReader(grayPNG(t, 200)))
	req.Header.Set("Content-Type", "image/png")
	req.Header.Set("traceparent", "00-"+parentTrace+"-"+parentSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("neighbors: %d", resp.StatusCode)
	}
	spans := exp.GetSpans()
	var server sdktrace.ReadOnlySpan
	for _, sp := range spans.Snapshots() {
		if sp.Name() == "POST neighbors" {
			server = sp
		}
	}
	if server == nil {
		t.Fatalf("no server span among %d", len(spans))
	}
	if server.SpanContext().TraceID().String() != parentTrace || server.Parent().SpanID().String() != parentSpan || !server.Parent().IsRemote() ||
		server.SpanKind() != trace.SpanKindServer {
		t.Fatalf("the server span does not continue the client's trace: %v, parent %v", server.SpanContext(), server.Parent())
	}
	if v, _ := attr(server, "http.response.status_code"); v.AsInt64() != 200 {
		t.Errorf("status attribute %v", v)
	}
	if v, _ := attr(server, "dimtorch.model_version"); v.AsString() != "v7" {
		t.Errorf("version attribute %v", v)
	}
	kids := children(spans, server.SpanContext())
	order := []string{"read", "decode", "queue", "model run", "search"}
	for i, name := range order {
		k, ok := kids[name]
		if !ok {
			t.Fatalf("no %q span under the request: %v", name, kids)
		}
		if i > 0 && k.StartTime().Before(kids[order[i-1]].StartTime()) {
			t.Errorf("%q starts before %q", name, order[i-1])
		}
		if k.EndTime().After(server.EndTime()) {
			t.Errorf("%q ends after the request", name)
		}
	}
	if v, _ := attr(kids["model run"], "dimtorch.batch_size"); v.AsInt64() != 1 {
		t.Errorf("batch size attribute %v", v)
	}
	if !kids["queue"].EndTime().Equal(kids["model run"].StartTime()) {
		t.Error("the queue span does not end where the run starts")
	}
	if kids["model run"].EndTime().Sub(kids["model run"].StartTime()) < 5*time.Millisecond {
		t.Error("the model run span is shorter than the run")
	}

	// gRPC: the trace context in the call's metadata.
	exp.Reset()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeGRPC(ctx, l) }()
	defer func() { cancel(); <-done }()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	call := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+parentTrace+"-"+parentSpan+"-01")
	_, err = inferencepb.NewGRPCInferenceServiceClient(conn).ModelInfer(call, &inferencepb.ModelInferRequest{ModelName: "mymodel",
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "encoded_image", Datatype: "BYTES", Shape: []int64{1},
			Contents: &inferencepb.InferTensorContents{BytesContents: [][]byte{grayPNG(t, 9)}}}}})
	if err != nil {
		t.Fatal(err)
	}
	spans = exp.GetSpans()
	server = nil
	for _, sp := range spans.Snapshots() {
		if sp.Name() == "/inference.GRPCInferenceService/ModelInfer" {
			server = sp
		}
	}
	if server == nil || server.SpanContext().TraceID().String() != parentTrace || server.Parent().SpanID().String() != parentSpan {
		t.Fatalf("gRPC server span: %v", server)
	}
	kids = children(spans, server.SpanContext())
	for _, name := range []string{"decode", "queue", "model run"} {
		if _, ok := kids[name]; !ok {
			t.Errorf("no %q span under the gRPC call: %v", name, kids)
		}
	}
}
