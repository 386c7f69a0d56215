package serve

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
)

// MinKeyLength is the shortest API key LoadAPIKeys accepts, in bytes: a
// shorter one is too easy to guess to protect anything.
const MinKeyLength = 16

// APIKeys holds the keys a client may present, as "Authorization: Bearer
// KEY", read from a file of one key per line (blank lines and lines
// starting with # are skipped, spaces around a key are trimmed). Only the
// keys' SHA-256 digests are kept, and a presented key is compared against
// every one of them in constant time, so neither the comparison's time nor
// a memory dump gives a key away. Reload re-reads the file; the keys are
// swapped atomically, so requests never see a half-read set. No method
// logs or returns a key.
type APIKeys struct {
	path   string
	hashes atomic.Pointer[[][sha256.Size]byte]
}

// LoadAPIKeys reads the key file at path.
func LoadAPIKeys(path string) (*APIKeys, error) {
	k := &APIKeys{path: path}
	if _, err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// Reload re-reads the key file and returns how many keys it holds. On any
// error (a missing or unreadable file, no keys, a key too short) the keys
// in use stay as they were.
func (k *APIKeys) Reload() (int, error) {
	b, err := os.ReadFile(k.path)
	if err != nil {
		return 0, fmt.Errorf("API key file: %w", err)
	}
	var hashes [][sha256.Size]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for line := 1; sc.Scan(); line++ {
		key := strings.TrimSpace(sc.Text())
		if key == "" || strings.HasPrefix(key, "#") {
			continue
		}
		if len(key) < MinKeyLength {
			return 0, fmt.Errorf("API key file %s, line %d: a key of %d bytes; keys need at least %d (for instance: openssl rand -hex 32)", k.path, line, len(key), MinKeyLength)
		}
		if strings.ContainsAny(key, " \t") {
			return 0, fmt.Errorf("API key file %s, line %d: a key with a space inside; one key per line", k.path, line)
		}
		hashes = append(hashes, sha256.Sum256([]byte(key)))
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("API key file %s: %w", k.path, err)
	}
	if len(hashes) == 0 {
		return 0, fmt.Errorf("API key file %s holds no key (one per line; # starts a comment)", k.path)
	}
	k.hashes.Store(&hashes)
	return len(hashes), nil
}

// Len is the number of keys in use.
func (k *APIKeys) Len() int { return len(*k.hashes.Load()) }

// Valid reports whether key is one of the keys, comparing its digest with
// every key's (no early exit).
func (k *APIKeys) Valid(key string) bool {
	h := sha256.Sum256([]byte(key))
	ok := 0
	for _, want := range *k.hashes.Load() {
		ok |= subtle.ConstantTimeCompare(h[:], want[:])
	}
	return ok == 1
}

// authenticate checks a request's bearer token against keys (nil: no
// keys, everything passes), and on failure sets RFC 6750's challenge.
func authenticate(keys *APIKeys, w http.ResponseWriter, r *http.Request) error {
	if keys == nil {
		return nil
	}
	h := r.Header.Get("Authorization")
	scheme, token, found := strings.Cut(h, " ")
	if h == "" || !found || !strings.EqualFold(scheme, "Bearer") {
		w.Header().Set("WWW-Authenticate", `Bearer realm="dimtorch"`)
		return errorf(http.StatusUnauthorized, "an API key is required: send the header Authorization: Bearer KEY")
	}
	if !keys.Valid(strings.TrimSpace(token)) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="dimtorch", error="invalid_token"`)
		return errorf(http.StatusUnauthorized, "the API key is not valid")
	}
	return nil
}

// Certificate is a TLS certificate and key read from PEM files, which
// Reload re-reads: handshakes after it present the new certificate, while
// connections already open carry on with theirs (nothing is dropped).
type Certificate struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

// LoadCertificate reads a PEM certificate (chain) and its private key.
func LoadCertificate(certFile, keyFile string) (*Certificate, error) {
	c := &Certificate{certFile: certFile, keyFile: keyFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload re-reads the files; on an error the certificate in use stays.
func (c *Certificate) Reload() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		var pathErr *os.PathError
		if errors.As(err, &pathErr) {
			return fmt.Errorf("TLS: %w", err)
		}
		return fmt.Errorf("TLS certificate %s with key %s: %w", c.certFile, c.keyFile, err)
	}
	c.cert.Store(&cert)
	return nil
}

// TLSConfig is a server configuration presenting the current certificate,
// TLS 1.2 at least, HTTP/2 and HTTP/1.1 offered.
func (c *Certificate) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.cert.Load(), nil
		},
	}
}
