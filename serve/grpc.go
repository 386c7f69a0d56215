package serve

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dimtorch/dimtorch/serve/inferencepb"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The Open Inference Protocol's gRPC form (inferencepb.GRPCInferenceService)
// on a listener of its own (`dimtorch serve --grpc-addr`): the same model,
// reloads, limits, batching, keys ("authorization: Bearer KEY" metadata;
// ServerLive and ServerReady stay open), TLS and metrics as the HTTP
// routes. Every answer's header metadata carries "dimtorch-model-version".
// An FP32 input comes as fp32_contents or as raw_input_contents
// (little-endian float32); an encoded_image input as bytes_contents (the
// files' bytes) or as raw_input_contents (each file preceded by its length
// as a little-endian uint32, Triton's layout). The output comes back the
// way the input came: raw_output_contents for a raw request, else
// fp32_contents.

// grpcVersionKey is the header metadata key of the model's version.
const grpcVersionKey = "dimtorch-model-version"

type grpcService struct {
	inferencepb.UnimplementedGRPCInferenceServiceServer
	s *Server
}

type grpcDeployment struct{}

// ServeGRPC answers the protocol's gRPC service on l until ctx is
// cancelled, then lets calls in flight finish (for up to ShutdownTimeout)
// and returns nil. Serve waits for it before it closes the model.
func (s *Server) ServeGRPC(ctx context.Context, l net.Listener) error {
	s.servers.Add(1)
	defer s.servers.Done()
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(int(min(s.cfg.MaxBody, math.MaxInt32))),
		grpc.UnaryInterceptor(s.grpcIntercept),
		grpc.ConnectionTimeout(s.cfg.ReadHeaderTimeout),
	}
	if s.cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.cfg.TLS.TLSConfig())))
	}
	gs := grpc.NewServer(opts...)
	inferencepb.RegisterGRPCInferenceServiceServer(gs, &grpcService{s: s})
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(l) }()
	s.cfg.Log.Info().Str("addr", l.Addr().String()).Bool("tls", s.cfg.TLS != nil).Msg("serving gRPC (Open Inference Protocol)")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(s.cfg.ShutdownTimeout):
		gs.Stop()
		<-stopped
	}
	<-errc
	return nil
}

// grpcIntercept checks the key, holds the current deployment for the call
// (its version in the header metadata), maps errors to gRPC codes and
// records the call in the metrics and the log.
func (s *Server) grpcIntercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	method := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
	dep := s.acquire()
	defer dep.users.Done()
	md, _ := metadata.FromIncomingContext(ctx)
	ctx = traceContext.Extract(ctx, mdCarrier(md))
	ctx, span := s.tracer.Start(ctx, info.FullMethod, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("rpc.system", "grpc"), attribute.String("rpc.method", method)))
	var resp any
	err := s.grpcAuthenticate(md, method)
	if err == nil {
		if dep.Version != "" {
			_ = grpc.SetHeader(ctx, metadata.Pairs(grpcVersionKey, dep.Version))
		}
		resp, err = h(context.WithValue(ctx, grpcDeployment{}, dep), req)
	}
	code := codes.OK
	if err != nil {
		err = grpcStatus(ctx, err)
		code = status.Code(err)
	}
	span.SetAttributes(attribute.Int("rpc.grpc.status_code", int(code)), attribute.String("dimtorch.model_version", dep.Version))
	if code == codes.Internal || code == codes.Unknown || code == codes.Unavailable {
		span.SetStatus(otelcodes.Error, status.Convert(err).Message())
	}
	span.End()
	d := time.Since(start)
	route := "grpc_" + method
	s.m.requests.WithLabelValues(route, strconv.Itoa(int(code))).Inc()
	s.m.latency.WithLabelValues(route).Observe(d.Seconds())
	ev := s.cfg.Log.Debug()
	if code == codes.Internal || code == codes.Unknown {
		ev = s.cfg.Log.Warn()
	}
	if err != nil {
		ev = ev.Err(err)
	}
	ev.Str("method", method).Str("code", code.String()).Dur("took", d).Msg("gRPC call")
	return resp, err
}

func (s *Server) grpcAuthenticate(md metadata.MD, method string) error {
	keys := s.cfg.APIKeys
	if keys == nil || method == "ServerLive" || method == "ServerReady" {
		return nil
	}
	v := md.Get("authorization")
	if len(v) == 0 {
		return status.Error(codes.Unauthenticated, "an API key is required: send the metadata authorization: Bearer KEY")
	}
	scheme, token, found := strings.Cut(v[0], " ")
	if !found || !strings.EqualFold(scheme, "Bearer") || !keys.Valid(strings.TrimSpace(token)) {
		return status.Error(codes.Unauthenticated, "the API key is not valid")
	}
	return nil
}

// grpcStatus turns the service's errors into gRPC statuses by their HTTP
// status (StatusOf).
func grpcStatus(ctx context.Context, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	c := codes.Internal
	switch StatusOf(err, ctx.Err() != nil) {
	case http.StatusBadRequest, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity:
		c = codes.InvalidArgument
	case http.StatusNotFound:
		c = codes.NotFound
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		c = codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		c = codes.Unavailable
	case http.StatusUnauthorized:
		c = codes.Unauthenticated
	case http.StatusForbidden:
		c = codes.PermissionDenied
	case StatusClientClosedRequest:
		c = codes.Canceled
	}
	return status.Error(c, err.Error())
}

func (g *grpcService) deployment(ctx context.Context, name, version string) (*live, error) {
	d := ctx.Value(grpcDeployment{}).(*live)
	if name != g.s.cfg.ModelName {
		return nil, status.Errorf(codes.NotFound, "no model %q: this server has %q", name, g.s.cfg.ModelName)
	}
	if version != "" && version != d.Version {
		return nil, status.Errorf(codes.NotFound, "model %q has no version %q: it serves %q", name, version, d.Version)
	}
	return d, nil
}

func (g *grpcService) ServerLive(context.Context, *inferencepb.ServerLiveRequest) (*inferencepb.ServerLiveResponse, error) {
	return &inferencepb.ServerLiveResponse{Live: true}, nil
}

func (g *grpcService) ServerReady(context.Context, *inferencepb.ServerReadyRequest) (*inferencepb.ServerReadyResponse, error) {
	return &inferencepb.ServerReadyResponse{Ready: g.s.ready.Load()}, nil
}

func (g *grpcService) ModelReady(ctx context.Context, r *inferencepb.ModelReadyRequest) (*inferencepb.ModelReadyResponse, error) {
	if _, err := g.deployment(ctx, r.GetName(), r.GetVersion()); err != nil {
		return nil, err
	}
	return &inferencepb.ModelReadyResponse{Ready: g.s.ready.Load()}, nil
}

func (g *grpcService) ServerMetadata(context.Context, *inferencepb.ServerMetadataRequest) (*inferencepb.ServerMetadataResponse, error) {
	return &inferencepb.ServerMetadataResponse{Name: "dimtorch", Version: g.s.cfg.ServerVersion, Extensions: []string{}}, nil
}

func (g *grpcService) ModelMetadata(ctx context.Context, r *inferencepb.ModelMetadataRequest) (*inferencepb.ModelMetadataResponse, error) {
	d, err := g.deployment(ctx, r.GetName(), r.GetVersion())
	if err != nil {
		return nil, err
	}
	in, out := names(d.Model)
	c, h, w := d.Model.InputShape()
	md := &inferencepb.ModelMetadataResponse{Name: g.s.cfg.ModelName, Platform: "onnxruntime_onnx",
		Inputs: []*inferencepb.ModelMetadataResponse_TensorMetadata{
			{Name: in, Datatype: "FP32", Shape: []int64{-1, int64(c), int64(h), int64(w)}},
			{Name: ImageInput, Datatype: "BYTES", Shape: []int64{-1}},
		},
		Outputs: []*inferencepb.ModelMetadataResponse_TensorMetadata{{Name: out, Datatype: "FP32", Shape: []int64{-1, int64(d.Model.Dim())}}},
	}
	if d.Version != "" {
		md.Versions = []string{d.Version}
	}
	return md, nil
}

func (g *grpcService) ModelInfer(ctx context.Context, r *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
	s := g.s
	d, err := g.deployment(ctx, r.GetModelName(), r.GetModelVersion())
	if err != nil {
		return nil, err
	}
	d.b.inflight.Add(1)
	defer d.b.inflight.Add(-1)
	outputs := make([]string, len(r.GetOutputs()))
	for i, o := range r.GetOutputs() {
		outputs[i] = o.GetName()
	}
	if err := v2Outputs(d, outputs); err != nil {
		return nil, err
	}
	if len(r.GetInputs()) != 1 {
		return nil, s.v2Inputs(d, len(r.GetInputs()))
	}
	t := r.GetInputs()[0]
	images, n, err := s.v2Resolve(d, t.GetName(), t.GetDatatype(), t.GetShape())
	if err != nil {
		return nil, err
	}
	raw := r.GetRawInputContents()
	if len(raw) > 1 || len(raw) == 1 && t.GetContents() != nil {
		return nil, errorf(http.StatusBadRequest, "input %q: give its data once, in contents or in raw_input_contents", t.GetName())
	}
	var pixels []float32
	if images {
		files := t.GetContents().GetBytesContents()
		if len(raw) == 1 {
			if files, err = splitRawBytes(raw[0]); err != nil {
				return nil, errorf(http.StatusBadRequest, "input %q: raw_input_contents: %v", t.GetName(), err)
			}
		}
		if len(files) != n {
			return nil, errorf(http.StatusBadRequest, "input %q: %d images for shape %v", t.GetName(), len(files), t.GetShape())
		}
		if pixels, _, err = s.preprocess(ctx, files, d); err != nil {
			return nil, err
		}
	} else {
		c, h, w := d.Model.InputShape()
		want := n * c * h * w
		pixels = t.GetContents().GetFp32Contents()
		if len(raw) == 1 {
			if len(raw[0]) != 4*want {
				return nil, errorf(http.StatusBadRequest, "input %q: %d raw bytes for shape %v, which holds %d float32 values", t.GetName(), len(raw[0]), t.GetShape(), want)
			}
			pixels = make([]float32, want)
			for i := range pixels {
				pixels[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[0][4*i:]))
			}
		}
		if len(pixels) != want {
			return nil, errorf(http.StatusBadRequest, "input %q: %d values for shape %v, which holds %d", t.GetName(), len(pixels), t.GetShape(), want)
		}
		for _, x := range pixels {
			if err := finite(float64(x)); err != nil {
				return nil, errorf(http.StatusBadRequest, "input %q: %v", t.GetName(), err)
			}
		}
	}
	vecs, err := s.run(ctx, d, pixels, n)
	if err != nil {
		return nil, err
	}
	_, out := names(d.Model)
	o := &inferencepb.ModelInferResponse_InferOutputTensor{Name: out, Datatype: "FP32", Shape: []int64{int64(n), int64(d.Model.Dim())}}
	resp := &inferencepb.ModelInferResponse{ModelName: s.cfg.ModelName, ModelVersion: d.Version, Id: r.GetId(),
		Outputs: []*inferencepb.ModelInferResponse_InferOutputTensor{o}}
	if len(raw) == 1 {
		b := make([]byte, 0, 4*n*d.Model.Dim())
		for _, v := range vecs {
			for _, x := range v {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
			}
		}
		resp.RawOutputContents = [][]byte{b}
	} else {
		flat := make([]float32, 0, n*d.Model.Dim())
		for _, v := range vecs {
			flat = append(flat, v...)
		}
		o.Contents = &inferencepb.InferTensorContents{Fp32Contents: flat}
	}
	return resp, nil
}

// splitRawBytes reads a BYTES tensor's raw contents: each element is its
// length as a little-endian uint32, then its bytes.
func splitRawBytes(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errors.New("a length cut short")
		}
		n := binary.LittleEndian.Uint32(b)
		b = b[4:]
		if uint64(n) > uint64(len(b)) {
			return nil, fmt.Errorf("an element of %d bytes with %d left", n, len(b))
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out, nil
}
