package integration

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// A backend that accepts and never answers gets the client a 504 after
// --backend-response-timeout, not after a built-in half minute, and the
// node says so in a warn line and in meshlb_proxy_errors_total.
func TestHungBackendAnswers504AfterTheConfiguredTimeout(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn // kept open and unread: the backend is hung, not dead
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})

	const timeout = time.Second
	p, s := startNode(t, "hung", "--backend", "deaf="+ln.Addr().String(),
		"--backend-response-timeout", timeout.String(), "--retries", "0")
	waitFor(t, 10*time.Second, "one ring", oneRing([]string{s.AdminAddr}, 1, 1))

	start := time.Now()
	res, err := http.Get("http://" + s.ProxyAddr + "/x?session_id=a")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	took := time.Since(start)
	if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), "backend timeout") {
		t.Fatalf("got %d %q; want 504 backend timeout", res.StatusCode, body)
	}
	if took < timeout || took > timeout+3*time.Second {
		t.Errorf("504 after %v; want about %v", took, timeout)
	}
	t.Logf("504 after %v (--backend-response-timeout %v)", took, timeout)

	waitFor(t, 5*time.Second, "warn line", func() (bool, string) {
		for _, l := range strings.Split(p.output(), "\n") {
			if strings.Contains(l, `"level":"warn"`) && strings.Contains(l, `"message":"proxy error"`) &&
				strings.Contains(l, `"status":504`) && strings.Contains(l, `"reason":"backend timeout"`) {
				return true, ""
			}
		}
		return false, "no warn line for the 504"
	})
	res, err = http.Get("http://" + s.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if want := `meshlb_proxy_errors_total{reason="backend timeout",status="504"} 1`; !strings.Contains(string(metrics), want) {
		t.Errorf("metrics lack %s", want)
	}
}
