package server

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// What guards the server from the clients it cannot trust.
//
// A web page the user opens can send requests to a loopback server: a "simple" cross-site POST
// (text/plain, no preflight) reaches the handler, and with DNS rebinding (evil.example resolving
// to 127.0.0.1) the page may even read the answers. So: a POST must be application/json (which a
// page can only send after a CORS preflight, which only allowed origins pass); a request from a
// foreign Origin is refused; a server on loopback answers only to loopback Host names.
//
// A hostile client can hold connections open: bodies must arrive within BodyTimeout, headers
// within ReadHeaderTimeout, idle keep-alive connections close after IdleTimeout, a client that
// takes no data for WriteTimeout loses its stream, and the listener holds at most a set number
// of connections (LimitListener).

// Connection timeouts of HTTPServer.
const (
	ReadHeaderTimeout = 10 * time.Second
	IdleTimeout       = 30 * time.Second
)

// guard checks the Host, the Origin, the API key and a POST's content type, and answers an
// allowed origin's CORS preflight.
func (s *Server) guard(w http.ResponseWriter, r *http.Request) *failure {
	if s.cfg.CheckHost && !s.hostAllowed(r.Host) {
		return &failure{http.StatusForbidden, "invalid_request_error", "forbidden_host", "",
			fmt.Sprintf("Host %q is not this server's: it answers to loopback names only (tiller serve --allow-host adds names)", r.Host)}
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		if !s.originAllowed(origin) {
			return &failure{http.StatusForbidden, "invalid_request_error", "forbidden_origin", "",
				fmt.Sprintf("requests from the web page at %q are refused (tiller serve --allow-origin allows an origin)", origin)}
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "GET, POST")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
			h.Set("Access-Control-Max-Age", "600")
			return nil
		}
	}
	if s.cfg.APIKey != "" && !s.keyMatches(r.Header.Get("Authorization")) {
		return &failure{http.StatusUnauthorized, "authentication_error", "invalid_api_key", "", "missing or wrong API key: send Authorization: Bearer KEY"}
	}
	if r.Method == http.MethodPost {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/json" {
			return &failure{http.StatusUnsupportedMediaType, "invalid_request_error", "unsupported_media_type", "",
				fmt.Sprintf("Content-Type %q: send the body as application/json", r.Header.Get("Content-Type"))}
		}
	}
	return nil
}

// keyMatches compares "Bearer KEY" with the server's key in constant time; the scheme's case does
// not matter (RFC 9110).
func (s *Server) keyMatches(auth string) bool {
	scheme, key, _ := strings.Cut(strings.TrimSpace(auth), " ")
	ok := subtle.ConstantTimeCompare([]byte(strings.TrimSpace(key)), []byte(s.cfg.APIKey)) == 1
	return ok && strings.EqualFold(scheme, "Bearer")
}

// hostAllowed: localhost, a loopback address, or a name the operator allowed, with any port.
func (s *Server) hostAllowed(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	return loopbackName(host) || slices.ContainsFunc(s.cfg.AllowHosts, func(a string) bool { return strings.EqualFold(a, host) })
}

// originAllowed: an origin on this machine's loopback, or one the operator allowed. The opaque
// origin "null" (sandboxed frames, files) is never allowed.
func (s *Server) originAllowed(origin string) bool {
	if slices.Contains(s.cfg.AllowOrigins, origin) {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && loopbackName(u.Hostname())
}

func loopbackName(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// body reads a request's body within BodyTimeout, then lifts the deadline so that a long
// generation is not cut off by it. A body that does not arrive in time is a 408, and its
// connection closes: the deadline stays, so that the server does not wait for the rest of the
// body before answering.
func (s *Server) body(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
	b, err := io.ReadAll(r.Body)
	if err != nil {
		w.Header().Set("Connection", "close")
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, &failure{http.StatusRequestTimeout, "invalid_request_error", "request_timeout", "", fmt.Sprintf("the body did not arrive within %s", s.cfg.BodyTimeout)}
		}
		return nil, err
	}
	rc.SetReadDeadline(time.Time{})
	return b, nil
}

// HTTPServer is the http.Server for a Server: header and idle timeouts against clients that hold
// connections, and no overall read or write timeout, which would cut long generations (the Server
// bounds body reads and stalled writes itself).
func HTTPServer(h http.Handler, logger *log.Logger) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: ReadHeaderTimeout, IdleTimeout: IdleTimeout, ErrorLog: logger, MaxHeaderBytes: 64 << 10}
}

// LimitListener holds at most n connections at once. A connection beyond that gets a 503 (with
// Retry-After) and is closed at once, so a client holding connections cannot make others wait
// unanswered in the kernel's backlog.
func LimitListener(l net.Listener, n int, logger *log.Logger) net.Listener {
	return &limitListener{Listener: l, slots: make(chan struct{}, n), log: logger}
}

type limitListener struct {
	net.Listener
	slots chan struct{}
	log   *log.Logger
	mu    sync.Mutex
	full  bool // the limit was reached and not yet logged as lifted
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			l.logFull(false)
			return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			l.logFull(true)
			go refuse(c)
		}
	}
}

// logFull logs when the limit is first reached and when connections are taken again.
func (l *limitListener) logFull(full bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.full == full || l.log == nil {
		l.full = full
		return
	}
	l.full = full
	if full {
		l.log.Printf("connection limit of %d reached: refusing new connections with 503", cap(l.slots))
	} else {
		l.log.Printf("taking connections again")
	}
}

func refuse(c net.Conn) {
	defer c.Close()
	f := &failure{http.StatusServiceUnavailable, "server_error", "too_many_connections", "", "the server holds as many connections as it takes; retry later"}
	b, _ := json.Marshal(f.body())
	c.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
}

// limitedConn gives its slot back once, when closed.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
