package serve

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the service's Prometheus series, on a registry of its own.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	images    prometheus.Counter
	batches   prometheus.Histogram
	queue     prometheus.GaugeFunc
	modelLoad prometheus.Gauge
	reloads   *prometheus.CounterVec
	modelInfo *prometheus.GaugeVec
}

// setVersion makes version the one model_info names.
func (m *metrics) setVersion(version string) {
	m.modelInfo.Reset()
	m.modelInfo.WithLabelValues(version).Set(1)
}

func newMetrics(queued func() float64) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dimtorch_serve_requests_total", Help: "HTTP requests by route and status code.",
	}, []string{"route", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dimtorch_serve_request_duration_seconds", Help: "Time from request to response, by route.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"route"})
	m.images = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "dimtorch_serve_images_total", Help: "Images embedded.",
	})
	m.batches = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "dimtorch_serve_batch_size", Help: "Images per model run.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10),
	})
	m.queue = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dimtorch_serve_queue_images", Help: "Images accepted and not yet answered.",
	}, queued)
	m.modelLoad = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "dimtorch_serve_model_load_seconds", Help: "Time to load the model and the gallery: at start-up, then of the last reload (with its warm-up).",
	})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dimtorch_serve_reloads_total", Help: "Model reloads by result (ok, failed: the previous model stayed).",
	}, []string{"result"})
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("failed")
	m.modelInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dimtorch_serve_model_info", Help: "1 for the version of the model being served (the Dimtorch-Model-Version header).",
	}, []string{"version"})
	m.reg.MustRegister(m.requests, m.latency, m.images, m.batches, m.queue, m.modelLoad, m.reloads, m.modelInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
