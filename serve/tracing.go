package serve

import (
	"context"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/metadata"
)

// Tracing (OpenTelemetry): with Config.TracerProvider set, every request
// (HTTP or gRPC) is a server span, continuing the W3C trace context the
// client sent (traceparent, tracestate), with children for its steps:
//
//	read        the body, up to the images' bytes
//	decode      decoding and preprocessing the images (images)
//	queue       waiting for a model run (from submission to the run's start)
//	model run   the run that embedded them (dimtorch.batch_size: images in the run, its own and others')
//	search      the gallery search of /v1/neighbors (k, dimtorch.gallery_size)
//
// The server span carries the route, the status and the model's version.
// `dimtorch serve --otlp-endpoint` exports them over OTLP/HTTP.

// TracerName is the instrumentation scope of the service's spans.
const TracerName = "github.com/dimtorch/dimtorch/serve"

var traceContext = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

func newTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return tp.Tracer(TracerName)
}

// startRequest starts a request's server span under the trace context its
// headers carry.
func (s *Server) startRequest(r *http.Request, route string) (*http.Request, trace.Span) {
	ctx := traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := s.tracer.Start(ctx, r.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path),
			attribute.String("http.route", route)))
	return r.WithContext(ctx), span
}

// endRequest records the status and model version and ends the span.
func endRequest(span trace.Span, code int, version string, err error) {
	span.SetAttributes(attribute.Int("http.response.status_code", code), attribute.String("dimtorch.model_version", version))
	if code >= 500 {
		span.SetStatus(codes.Error, errText(err))
	}
	span.End()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// step starts a child span of the request in ctx.
func (s *Server) step(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return s.tracer.Start(ctx, name, trace.WithAttributes(attrs...))
}

// run embeds a request's images through its deployment's batcher and
// records the wait and the run as children of the request's span.
func (s *Server) run(ctx context.Context, d *live, pixels []float32, n int) ([][]float32, error) {
	submitted := time.Now()
	vecs, t, err := d.b.embed(ctx, pixels, n)
	if trace.SpanFromContext(ctx).IsRecording() && !t.start.IsZero() {
		_, q := s.tracer.Start(ctx, "queue", trace.WithTimestamp(submitted), trace.WithAttributes(attribute.Int("images", n)))
		q.End(trace.WithTimestamp(t.start))
		_, m := s.tracer.Start(ctx, "model run", trace.WithTimestamp(t.start),
			trace.WithAttributes(attribute.Int("dimtorch.batch_size", t.batch), attribute.Int("images", n)))
		if err != nil {
			m.SetStatus(codes.Error, err.Error())
		}
		m.End(trace.WithTimestamp(t.end))
	}
	return vecs, err
}

// mdCarrier reads and writes gRPC metadata for the propagator.
type mdCarrier metadata.MD

func (c mdCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
