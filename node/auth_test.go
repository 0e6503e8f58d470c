package node

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

const (
	readTok  = "read-token-0123456789"
	writeTok = "write-token-0123456789"
)

var tokenCases = []struct {
	label string
	file  string
	err   string // "" for success
}{
	{"two roles", "# ops\n" + readTok + " read\n\n" + writeTok + " write\n", ""},
	{"crlf and spaces", "  " + readTok + "\tread  \r\n", ""},
	{"empty", "\n# nothing\n", "no token"},
	{"short", "short read\n", "shorter"},
	{"bad role", readTok + " admin\n", "role"},
	{"three fields", readTok + " read extra\n", "TOKEN ROLE"},
	{"twice", readTok + " read\n" + readTok + " write\n", "twice"},
	{"control byte", "read-token-\x01123456789 read\n", "printable"},
	{"utf-8", "read-token-é123456789 read\n", "printable"},
}

func TestParseTokenFile(t *testing.T) {
	for _, tc := range tokenCases {
		t.Run(tc.label, func(t *testing.T) {
			_, err := parseTokenFile([]byte(tc.file))
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("error %v; want none", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v; want one with %q", err, tc.err)
			case err != nil && (strings.Contains(err.Error(), readTok) || strings.Contains(err.Error(), "123456789")):
				t.Fatalf("error %q shows the token", err)
			}
		})
	}
}

func FuzzParseTokenFile(f *testing.F) {
	for _, tc := range tokenCases {
		f.Add([]byte(tc.file))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := parseTokenFile(b)
		if err != nil {
			if ts != nil {
				t.Fatal("a token set with an error")
			}
			return
		}
		if len(ts.hashes) == 0 || len(ts.hashes) != len(ts.roles) {
			t.Fatalf("%d hashes, %d roles", len(ts.hashes), len(ts.roles))
		}
		// Every token parsed back has the role its line gave.
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && !strings.HasPrefix(f[0], "#") {
				if got := ts.role(f[0]).String(); got != f[1] {
					t.Fatalf("role of a parsed token = %s; want %s", got, f[1])
				}
			}
		}
	})
}

func newTestGate(t *testing.T, sec Security) (*adminGate, *bytes.Buffer) {
	t.Helper()
	if sec.AdminTokenFile == "" {
		sec.AdminTokenFile = filepath.Join(t.TempDir(), "tokens")
		if err := os.WriteFile(sec.AdminTokenFile, []byte(readTok+" read\n"+writeTok+" write\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	g, err := newAdminGate(Config{Security: sec}, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	return g, &logs
}

func TestAdminGate(t *testing.T) {
	g, logs := newTestGate(t, Security{AdminAllowedOrigins: []string{"https://ops.example.com"}, AdminHosts: []string{"meshlb.internal"}})
	h := g.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	json := "application/json"
	for _, tc := range []struct {
		label, method, path, token, host, origin, ctype string
		want                                            int
	}{
		{"healthz open", "GET", "/healthz", "", "", "", "", 200},
		{"readyz open", "GET", "/readyz", "", "", "", "", 200},
		{"metrics open", "GET", "/metrics", "", "", "", "", 200},
		{"status no token", "GET", "/v1/status", "", "", "", "", 401},
		{"status wrong token", "GET", "/v1/status", "nope-nope-nope-nope", "", "", "", 401},
		{"status read", "GET", "/v1/status", readTok, "", "", "", 200},
		{"status write", "GET", "/v1/status", writeTok, "", "", "", 200},
		{"new route is covered", "GET", "/v1/mesh", "", "", "", "", 401},
		{"ui page open", "GET", "/ui/", "", "", "", "", 200},
		{"ui script open", "GET", "/ui/app.js", "", "", "", "", 200},
		{"ui data is covered", "GET", "/ui/api/state", "", "", "", "", 401},
		{"ui stream is covered", "GET", "/ui/api/stream", "", "", "", "", 401},
		{"ui data with a read token", "GET", "/ui/api/state", readTok, "", "", "", 200},
		{"add read", "POST", "/v1/backends", readTok, "", "", json, 403},
		{"add write", "POST", "/v1/backends", writeTok, "", "", json, 200},
		{"add no token", "POST", "/v1/backends", "", "", "", json, 401},
		{"delete read", "DELETE", "/v1/backends/x", readTok, "", "", json, 403},
		{"keys list read", "GET", "/v1/keys", readTok, "", "", "", 403},
		{"keys list write", "GET", "/v1/keys", writeTok, "", "", "", 200},
		{"pprof read", "GET", "/debug/pprof/", readTok, "", "", "", 403},
		{"text/plain change", "POST", "/v1/backends", writeTok, "", "", "text/plain", 415},
		{"form change", "POST", "/v1/backends/x/drain", writeTok, "", "", "application/x-www-form-urlencoded", 415},
		{"no content type", "DELETE", "/v1/backends/x", writeTok, "", "", "", 415},
		{"json with charset", "POST", "/v1/backends", writeTok, "", "", "application/json; charset=utf-8", 200},
		{"foreign origin", "POST", "/v1/backends", writeTok, "", "https://evil.example", json, 403},
		{"allowed origin", "POST", "/v1/backends", writeTok, "", "https://ops.example.com", json, 200},
		{"foreign origin on a read", "GET", "/v1/status", readTok, "", "https://evil.example", "", 403},
		{"our own origin", "POST", "/v1/backends", writeTok, "", "http://127.0.0.1:9901", json, 200},
		{"our own host on another scheme port", "POST", "/v1/backends", writeTok, "", "http://127.0.0.1:9902", json, 403},
		{"rebinding host", "GET", "/v1/status", readTok, "evil.example:9901", "", "", 403},
		{"rebinding host on healthz", "GET", "/healthz", "", "evil.example", "", "", 403},
		{"listed host", "GET", "/v1/status", readTok, "meshlb.internal:9901", "", "", 200},
		{"localhost", "GET", "/v1/status", readTok, "localhost:9901", "", "", 200},
		{"ipv6 literal", "GET", "/v1/status", readTok, "[::1]:9901", "", "", 200},
		{"http/1.0 without host", "GET", "/healthz", "", "-", "", "", 200},
		{"a change to an open path wants a token", "POST", "/healthz", "", "", "", json, 401},
	} {
		t.Run(tc.label, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "http://127.0.0.1:9901"+tc.path, strings.NewReader("{}"))
			switch tc.host {
			case "":
			case "-":
				req.Host = ""
			default:
				req.Host = tc.host
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			g.denyLog = logEvery{} // every refusal logs, to check them all
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status = %d; want %d (%s)", rec.Code, tc.want, rec.Body)
			}
			if tc.want >= 400 && !strings.Contains(rec.Body.String(), `"error"`) {
				t.Fatalf("body %q is not a JSON error", rec.Body)
			}
			if tc.want == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	if strings.Contains(logs.String(), readTok) || strings.Contains(logs.String(), writeTok) || strings.Contains(logs.String(), "nope-nope") {
		t.Fatalf("a token is in the log:\n%s", logs)
	}
	if !strings.Contains(logs.String(), `"message":"admin request refused"`) || !strings.Contains(logs.String(), `"level":"warn"`) {
		t.Fatalf("refusals not logged at warn:\n%s", logs)
	}
}

func TestAdminGateAuthAllAndReload(t *testing.T) {
	g, _ := newTestGate(t, Security{AdminAuthAll: true})
	h := g.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	get := func(path, tok string) int {
		req := httptest.NewRequest("GET", "http://127.0.0.1:1"+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "bearer "+tok)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if c := get("/healthz", ""); c != 401 {
		t.Fatalf("healthz with --admin-auth-all = %d; want 401", c)
	}
	newTok := "fresh-token-0123456789"
	if err := os.WriteFile(g.path, []byte(newTok+" read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.reload(); err != nil {
		t.Fatal(err)
	}
	if c := get("/v1/status", readTok); c != 401 {
		t.Fatalf("old token after reload = %d; want 401", c)
	}
	if c := get("/v1/status", newTok); c != 200 {
		t.Fatalf("new token after reload = %d; want 200", c)
	}
	if err := os.WriteFile(g.path, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.reload(); err == nil {
		t.Fatal("reload of a bad file: no error")
	}
	if c := get("/v1/status", newTok); c != 200 {
		t.Fatalf("after a failed reload = %d; want 200 (the tokens in force stay)", c)
	}
}

func TestAdminExposedRefused(t *testing.T) {
	for _, tc := range []struct {
		addr string
		sec  Security
		ok   bool
	}{
		{"127.0.0.1:0", Security{}, true},
		{"[::1]:0", Security{}, true},
		{"localhost:9901", Security{}, true},
		{"0.0.0.0:9901", Security{}, false},
		{":9901", Security{}, false},
		{"10.0.0.1:9901", Security{}, false},
		{"10.0.0.1:9901", Security{AdminInsecure: true}, true},
		{"10.0.0.1:9901", Security{AdminTokenFile: "x"}, true},
	} {
		errs := tc.sec.validate(tc.addr, false)
		if (len(errs) == 0) != tc.ok {
			t.Errorf("%s %+v: errors %v; want ok %v", tc.addr, tc.sec, errs, tc.ok)
		}
	}
}
