package serve

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dimtorch/dimtorch/internal/testcert"
	"github.com/rs/zerolog"
)

const (
	keyA = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
	keyB = "another-key-long-enough-0123456789"
	keyC = "the-key-after-rotation-0123456789"
)

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// request sends method to url with the bearer key (none when ""), and
// returns the status, the WWW-Authenticate header and the body.
func request(t *testing.T, c *http.Client, method, url, key string, body []byte) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "image/png")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(b)
}

// Every route but health and readiness needs a key from the file; a
// missing key and a wrong one get 401 with RFC 6750's challenges; Reload
// rotates the keys, and a bad file leaves the old ones in force. No key
// reaches the log.
func TestAPIKeys(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "keys")
	writeFile(t, file, "# keys of the service\n"+keyA+"\n\n  "+keyB+"  \n")
	keys, err := LoadAPIKeys(file)
	if err != nil {
		t.Fatal(err)
	}
	if keys.Len() != 2 {
		t.Fatalf("%d keys, want 2", keys.Len())
	}
	var logged bytes.Buffer
	var mu sync.Mutex
	cfg := Config{APIKeys: keys}
	s, err := New(Deployment{Model: &fakeModel{}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.cfg.Log = zerolog.New(zerolog.SyncWriter(lockedWriter{&mu, &logged})).Level(zerolog.DebugLevel)
	s.SetReady(true)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	base := "http://" + l.Addr().String()
	c := &http.Client{Timeout: 10 * time.Second}
	img := grayPNG(t, 100)

	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _, _ := request(t, c, "GET", base+p, "", nil); code != 200 {
			t.Fatalf("%s without a key: %d, want 200 (probes stay open)", p, code)
		}
	}
	for _, tc := range []struct{ method, path string }{{"POST", "/v1/embed"}, {"POST", "/v1/neighbors"}, {"GET", "/metrics"}, {"POST", "/v1/admin/reload"}, {"GET", "/no/such/route"}} {
		code, challenge, body := request(t, c, tc.method, base+tc.path, "", img)
		if code != 401 || challenge != `Bearer realm="dimtorch"` || !strings.Contains(body, "Authorization: Bearer") {
			t.Fatalf("%s %s without a key: %d %q %s", tc.method, tc.path, code, challenge, body)
		}
		code, challenge, _ = request(t, c, tc.method, base+tc.path, keyA+"x", img)
		if code != 401 || !strings.Contains(challenge, `error="invalid_token"`) {
			t.Fatalf("%s %s with a wrong key: %d %q", tc.method, tc.path, code, challenge)
		}
	}
	for _, k := range []string{keyA, keyB} {
		if code, _, body := request(t, c, "POST", base+"/v1/embed", k, img); code != 200 {
			t.Fatalf("with a valid key: %d %s", code, body)
		}
	}
	if code, _, _ := request(t, c, "GET", base+"/metrics", keyA, nil); code != 200 {
		t.Fatalf("metrics with a key: %d", code)
	}
	req, _ := http.NewRequest("POST", base+"/v1/embed", bytes.NewReader(img))
	req.Header.Set("Authorization", "Basic "+keyA)
	if resp, err := c.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("a key under another scheme: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Rotation: keyC replaces keyA and keyB.
	writeFile(t, file, keyC+"\n")
	if n, err := keys.Reload(); err != nil || n != 1 {
		t.Fatalf("reload: %d keys, %v", n, err)
	}
	if code, _, _ := request(t, c, "POST", base+"/v1/embed", keyA, img); code != 401 {
		t.Fatalf("a rotated-out key: %d", code)
	}
	if code, _, _ := request(t, c, "POST", base+"/v1/embed", keyC, img); code != 200 {
		t.Fatalf("the new key: %d", code)
	}
	// Bad files are refused with the reason, naming no key, and keyC stays.
	for text, want := range map[string]string{
		"":                   "holds no key",
		"# only a comment\n": "holds no key",
		"short\n":            "line 1: a key of 5 bytes",
		keyA + " " + keyB:    "line 1: a key with a space inside",
	} {
		writeFile(t, file, text)
		_, err := keys.Reload()
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), keyA) || strings.Contains(err.Error(), "short") {
			t.Fatalf("file %q: %v, want %q without the key", text, err, want)
		}
	}
	os.Remove(file)
	if _, err := keys.Reload(); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
	if code, _, _ := request(t, c, "POST", base+"/v1/embed", keyC, img); code != 200 {
		t.Fatalf("after failed reloads the last good key: %d", code)
	}
	if _, err := LoadAPIKeys(file); err == nil {
		t.Fatal("a missing key file loads")
	}
	mu.Lock()
	log := logged.String()
	mu.Unlock()
	if !strings.Contains(log, `"status":401`) {
		t.Fatalf("the requests were not logged: %s", log)
	}
	for _, k := range []string{keyA, keyB, keyC} {
		if strings.Contains(log, k) {
			t.Fatalf("a key reached the log: %s", log)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// HTTPS with a certificate made here: a real handshake on loopback (HTTP/2
// and HTTP/1.1), plain HTTP refused; Reload swaps the certificate for new
// handshakes while a connection opened before it carries on; a damaged
// certificate file keeps the old one. The metrics move to a listener of
// their own.
func TestTLSAndMetricsListener(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, cert1 := testcert.Write(t, dir, 1)
	cert, err := LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Deployment{Model: &fakeModel{}}, Config{TLS: cert, NoMetricsRoute: true, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- s.Serve(ctx, l) }()
	go func() { done <- s.ServeMetrics(ctx, ml) }()
	defer func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}()
	base := "https://" + l.Addr().String()
	client := testcert.Client
	img := grayPNG(t, 100)
	for _, h2 := range []bool{true, false} {
		resp, err := client(cert1, h2).Post(base+"/v1/embed", "image/png", bytes.NewReader(img))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := map[bool]int{true: 2, false: 1}[h2]
		if resp.StatusCode != 200 || resp.TLS == nil || resp.ProtoMajor != want || resp.TLS.PeerCertificates[0].SerialNumber.Int64() != 1 {
			t.Fatalf("HTTPS (h2 %v): %d %s", h2, resp.StatusCode, resp.Proto)
		}
	}
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + l.Addr().String() + "/healthz"); err == nil {
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP to the TLS port: %d", resp.StatusCode)
		}
		resp.Body.Close()
	}

	// A connection opened before the rotation stays up across it.
	old := client(cert1, false)
	get := func(c *http.Client) (*http.Response, error) {
		resp, err := c.Get(base + "/healthz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	if _, err := get(old); err != nil {
		t.Fatal(err)
	}
	_, _, cert2 := testcert.Write(t, dir, 2)
	if err := cert.Reload(); err != nil {
		t.Fatal(err)
	}
	resp, err := get(old)
	if err != nil || resp.TLS.PeerCertificates[0].SerialNumber.Int64() != 1 || resp.TLS.DidResume {
		t.Fatalf("the connection opened before the reload: %v", err)
	}
	resp, err = get(client(cert2, false))
	if err != nil || resp.TLS.PeerCertificates[0].SerialNumber.Int64() != 2 {
		t.Fatalf("a new connection after the reload: %v", err)
	}
	if _, err := get(client(cert1, false)); err == nil {
		t.Fatal("a client trusting only the old certificate still connects")
	}
	writeFile(t, certFile, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
	if err := cert.Reload(); err == nil || !strings.Contains(err.Error(), "cert.pem") {
		t.Fatalf("a damaged certificate: %v", err)
	}
	if _, err := get(client(cert2, false)); err != nil {
		t.Fatalf("after a failed reload the last good certificate: %v", err)
	}
	if _, err := LoadCertificate(filepath.Join(dir, "none.pem"), keyFile); err == nil || !strings.Contains(err.Error(), "none.pem") {
		t.Fatalf("a missing certificate: %v", err)
	}

	// Metrics: on their own plain listener, not on the service's.
	if code, _, _ := request(t, client(cert2, false), "GET", base+"/metrics", "", nil); code != 404 {
		t.Fatalf("/metrics on the service's listener with NoMetricsRoute: %d", code)
	}
	mresp, err := http.Get("http://" + ml.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if mresp.StatusCode != 200 || !strings.Contains(string(b), `dimtorch_serve_requests_total{code="200",route="embed"} 2`) {
		t.Fatalf("metrics listener: %d %.300s", mresp.StatusCode, b)
	}
}
