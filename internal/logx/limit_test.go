package logx

import (
	"bytes"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"
)

func TestLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l Limiter
		if ok, n := l.Allow(); !ok || n != 0 {
			t.Fatalf("first Allow = %v, %d; want true, 0", ok, n)
		}
		for range 5 {
			if ok, _ := l.Allow(); ok {
				t.Fatal("a second line within the period was allowed")
			}
		}
		time.Sleep(time.Second)
		if ok, n := l.Allow(); !ok || n != 5 {
			t.Fatalf("Allow after the period = %v, %d; want true, 5", ok, n)
		}
		l2 := Limiter{Period: 10 * time.Second}
		l2.Allow()
		time.Sleep(5 * time.Second)
		if ok, _ := l2.Allow(); ok {
			t.Fatal("a custom period was not kept")
		}
	})
}

func TestStdLogger(t *testing.T) {
	var buf bytes.Buffer
	l := zerolog.New(&buf).Level(zerolog.InfoLevel)
	StdLogger(l, zerolog.WarnLevel, "http server error").Printf("http: TLS handshake error from %s", "1.2.3.4:5")
	StdLogger(l, zerolog.DebugLevel, "reverse proxy").Print("dropped")
	out := buf.String()
	if !strings.Contains(out, `"message":"http server error"`) || !strings.Contains(out, `"detail":"http: TLS handshake error from 1.2.3.4:5"`) || !strings.Contains(out, `"level":"warn"`) {
		t.Fatalf("log = %s", out)
	}
	if strings.Contains(out, "dropped") {
		t.Fatal("a debug line was written at info level")
	}
}
