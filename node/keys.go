package node

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/router"
)

// Mesh-wide gossip key rotation. A step (install, use, remove a key) is
// written to the one replicator as an intent, in a Secret kind: it rides
// the encrypted gossip, so the key is never in clear on the wire, and a
// mesh without a gossip key has nothing to rotate. Every node applies the
// intents to its own keyring and answers with an owned status entry, the
// IDs of the keys it holds and of its primary. The admin call that wrote
// the step waits until every live node's status shows it, and reports who
// did and who did not: an acknowledgement, like `serf keys`. The order of
// steps is the operator's (install everywhere, use, remove), and the API
// refuses a use that would cut off a node and a removal of a key in use.
//
// Intent: key = the key's ID, value = one byte (1 installed, 2 primary)
// then the key; a removal is the intent's tombstone. The primary is the
// newest intent marked primary, so steps merge in any order of delivery.
//
// Status: key = node name, value = the primary's ID then every held ID,
// each keyIDLen hex characters.

const (
	intentInstalled byte = 1
	intentPrimary   byte = 2

	keyIDLen = 16 // gossip.KeyID: 8 bytes in hex

	// keyAckTimeout bounds the wait for every live node to show a step.
	// Gossip reaches 50 nodes in well under a second; the rest is slack
	// for a node that repairs by push/pull.
	keyAckTimeout = 15 * time.Second
	// keyViewLag bounds how long "use" waits for this node's view of the
	// others' keys to catch up with an install it holds already.
	keyViewLag = 3 * time.Second
)

// security is the node's share of Security: built in New.
type security struct {
	gate     *adminGate
	tls      *tls.Config // nil: plain HTTP
	changes  <-chan struct{}
	fileMu   sync.Mutex // serialises keyring file writes
	applyMu  sync.Mutex // serialises applyKeyIntents
	lastFile []byte

	// ackTimeoutForTest replaces keyAckTimeout; ignoreIntentsForTest
	// makes the node deaf to key steps, as a node on an old release is.
	ackTimeoutForTest    time.Duration
	ignoreIntentsForTest atomic.Bool
}

func (n *Node) initSecurity() error {
	g, err := newAdminGate(n.cfg, n.log)
	if err != nil {
		return err
	}
	n.sec.gate = g
	g.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshlb_admin_refused_total", Help: "Admin API requests refused, by reason: no_token, unknown_token, read_role, host, origin, content_type.",
	}, []string{"reason"})
	if err := n.reg.Register(g.refused); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if n.cfg.AdminTLSCert != "" {
		cert, err := tls.LoadX509KeyPair(n.cfg.AdminTLSCert, n.cfg.AdminTLSKey)
		if err != nil {
			return fmt.Errorf("admin tls: %w", err)
		}
		tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if n.cfg.AdminClientCA != "" {
			pem, err := os.ReadFile(n.cfg.AdminClientCA)
			if err != nil {
				return fmt.Errorf("admin client ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("admin client ca %s: no PEM certificate in it", n.cfg.AdminClientCA)
			}
			tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
		}
		n.sec.tls = tc
	}
	n.sec.changes = n.cluster.Subscribe()
	for _, limit := range []string{router.LimitConnsPerIP, router.LimitHandshakeRate, router.LimitTrackerFull} {
		if err := n.reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "meshlb_limited_total", Help: "Requests and WebSocket handshakes refused 429 by a per-client limit (--max-conns-per-ip, --handshake-rate-per-ip), by limit.",
			ConstLabels: prometheus.Labels{"limit": limit},
		}, func() float64 { return float64(n.router.LimitedCounts()[limit]) })); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	if n.cfg.AdminTokenFile == "" && !IsLoopbackHostPort(n.cfg.AdminAddr) {
		n.log.Warn().Str("admin_addr", n.cfg.AdminAddr).Msg("admin api served beyond loopback without tokens (--admin-insecure)")
	}
	return nil
}

// secureAdminListener puts TLS on the admin listener when configured,
// and says at start how the admin API is guarded.
func (n *Node) secureAdminListener(ln net.Listener) net.Listener {
	_, _, kerr := n.cluster.Keys()
	n.log.Info().Bool("tokens", n.cfg.AdminTokenFile != "").Bool("tls", n.sec.tls != nil).
		Bool("client_certs", n.cfg.AdminClientCA != "").Bool("auth_all", n.cfg.AdminAuthAll).
		Bool("gossip_encrypted", kerr == nil).Str("keyring_file", n.cfg.KeyringFile).
		Msg("admin api access")
	if n.sec.tls == nil {
		return ln
	}
	return tls.NewListener(ln, n.sec.tls)
}

// LoadKeyring reads a keyring file into gc: the primary into SecretKey and
// the others into ExtraKeys. A missing file leaves gc as it is (it is
// written once the node runs). The node calls it from New.
func LoadKeyring(path string, gc *gossip.Config) (loaded bool, err error) {
	if path == "" {
		return false, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("keyring file: %w", err)
	}
	keys, err := parseKeyringFile(b)
	if err != nil {
		return false, fmt.Errorf("keyring file %s: %w", path, err)
	}
	gc.SecretKey, gc.ExtraKeys = keys[0], keys[1:]
	return true, nil
}

// loadKeyring is LoadKeyring for a node: a --gossip-key that the file
// does not hold is worth a warning, since the file wins.
func loadKeyring(cfg *Config, log zerolog.Logger) error {
	given := cfg.Gossip.SecretKey
	loaded, err := LoadKeyring(cfg.KeyringFile, &cfg.Gossip)
	if err != nil || !loaded || given == nil {
		return err
	}
	for _, k := range append([][]byte{cfg.Gossip.SecretKey}, cfg.Gossip.ExtraKeys...) {
		if bytes.Equal(k, given) {
			return nil
		}
	}
	log.Warn().Str("file", cfg.KeyringFile).Str("key_id", gossip.KeyID(given)).
		Msg("the gossip key given is not in the keyring file; the file's keys are used")
	return nil
}

// parseKeyringFile reads a JSON array of base64 keys, primary first (the
// format of Serf's keyring file).
func parseKeyringFile(b []byte) ([][]byte, error) {
	var enc []string
	if err := json.Unmarshal(b, &enc); err != nil {
		return nil, errors.New("want a JSON array of base64 keys, primary first")
	}
	if len(enc) == 0 || len(enc) > gossip.MaxKeys {
		return nil, fmt.Errorf("%d keys; want 1 to %d", len(enc), gossip.MaxKeys)
	}
	keys := make([][]byte, 0, len(enc))
	for i, s := range enc {
		k, err := base64.StdEncoding.DecodeString(s)
		if err == nil {
			err = gossip.ValidateKey(k)
		}
		if err != nil {
			return nil, fmt.Errorf("key %d: not a base64 AES key of 16, 24 or 32 bytes", i+1)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// saveKeyring writes the keyring file atomically (0600: it holds secrets)
// when its content changed.
func (n *Node) saveKeyring() error {
	path := n.cfg.KeyringFile
	if path == "" {
		return nil
	}
	primary, all, err := n.cluster.Keys()
	if err != nil {
		return nil // no keyring: nothing to keep
	}
	enc := []string{base64.StdEncoding.EncodeToString(primary)}
	for _, k := range all[1:] {
		enc = append(enc, base64.StdEncoding.EncodeToString(k))
	}
	b, _ := json.Marshal(enc)
	n.sec.fileMu.Lock()
	defer n.sec.fileMu.Unlock()
	if bytes.Equal(b, n.sec.lastFile) {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".keyring-*")
	if err != nil {
		return fmt.Errorf("write keyring file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a rename, a no-op
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write keyring file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write keyring file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write keyring file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write keyring file: %w", err)
	}
	n.sec.lastFile = b
	return nil
}

func keyKinds() []gossip.KindSpec {
	return []gossip.KindSpec{
		{
			Kind: kindKeyIntent, Name: "key_intent", Secret: true,
			MaxValue: 1 + 32, MaxEntries: 64, MaxBytes: 16 << 10,
			Validate: func(key string, value []byte) error {
				_, _, err := decodeIntent(key, value)
				return err
			},
			RelayAll: true,
		},
		{
			Kind: kindKeyStatus, Name: "key_status",
			MaxValue: keyIDLen * (1 + gossip.MaxKeys), MaxEntries: 1000, MaxBytes: 256 << 10, // 1,000 nodes × at most ~180 bytes
			Validate: func(_ string, value []byte) error {
				_, _, err := decodeKeyStatus(value)
				return err
			},
			Owned: true, OwnerTTL: observationTTL,
		},
	}
}

func decodeIntent(id string, v []byte) (op byte, key []byte, err error) {
	if len(v) < 1 || (v[0] != intentInstalled && v[0] != intentPrimary) {
		return 0, nil, errors.New("key intent: bad op")
	}
	key = v[1:]
	if err := gossip.ValidateKey(key); err != nil {
		return 0, nil, fmt.Errorf("key intent: %w", err)
	}
	if gossip.KeyID(key) != id {
		return 0, nil, errors.New("key intent: id does not match the key")
	}
	return v[0], key, nil
}

func encodeKeyStatus(primary string, ids []string) []byte {
	b := []byte(primary)
	for _, id := range ids {
		b = append(b, id...)
	}
	return b
}

func decodeKeyStatus(v []byte) (primary string, ids []string, err error) {
	if len(v) == 0 || len(v)%keyIDLen != 0 || len(v)/keyIDLen > 1+gossip.MaxKeys {
		return "", nil, errors.New("key status: bad length")
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", nil, errors.New("key status: not hex")
		}
	}
	primary = string(v[:keyIDLen])
	for i := keyIDLen; i < len(v); i += keyIDLen {
		ids = append(ids, string(v[i:i+keyIDLen]))
	}
	return primary, ids, nil
}

// keyLoop applies intents as they arrive and publishes this node's status.
func (n *Node) keyLoop(ctx context.Context) {
	if _, _, err := n.cluster.Keys(); err != nil {
		return // no keyring: nothing to rotate, nothing to report
	}
	n.applyKeyIntents()
	last := n.cluster.Digest(kindKeyIntent)
	// A status write lost to a node's restart is refuted by the
	// replicator; the ticker is a second chance for a failed write.
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.sec.changes:
			if d := n.cluster.Digest(kindKeyIntent); d != last {
				last = d
				n.applyKeyIntents()
			}
		case <-tick.C:
			n.applyKeyIntents()
		}
	}
}

// applyKeyIntents brings this node's keyring to the intents held: every
// installed or primary key in, the newest primary in use, removed keys
// out (but never the primary). Then the keyring file and the status.
func (n *Node) applyKeyIntents() {
	n.sec.applyMu.Lock()
	defer n.sec.applyMu.Unlock()
	if n.sec.ignoreIntentsForTest.Load() {
		return
	}
	var primary []byte
	var primaryVersion uint64
	var removed [][]byte
	for _, e := range n.cluster.Entries(kindKeyIntent) {
		op, key, err := decodeIntent(e.Key, e.Value)
		if err != nil {
			continue // validated on the way in; not reachable
		}
		if e.Deleted {
			removed = append(removed, key)
			continue
		}
		if err := n.cluster.InstallKey(key); err != nil {
			n.log.Warn().Err(err).Str("key_id", e.Key).Msg("gossip key install failed")
		}
		if op == intentPrimary && e.Version > primaryVersion {
			primary, primaryVersion = key, e.Version
		}
	}
	if primary != nil {
		if err := n.cluster.UseKey(primary); err != nil {
			n.log.Warn().Err(err).Str("key_id", gossip.KeyID(primary)).Msg("gossip key use failed")
		}
	}
	for _, key := range removed {
		if err := n.cluster.RemoveKey(key); err != nil {
			n.log.Warn().Err(err).Str("key_id", gossip.KeyID(key)).Msg("gossip key removal refused")
		}
	}
	if err := n.saveKeyring(); err != nil {
		n.log.Error().Err(err).Str("file", n.cfg.KeyringFile).Msg("keyring file not written")
	}
	n.publishKeyStatus()
}

func (n *Node) publishKeyStatus() {
	p, all, err := n.cluster.Keys()
	if err != nil {
		return
	}
	ids := make([]string, len(all))
	for i, k := range all {
		ids[i] = gossip.KeyID(k)
	}
	if _, err := n.cluster.Put(kindKeyStatus, n.cfg.Name, encodeKeyStatus(gossip.KeyID(p), ids)); err != nil && !errors.Is(err, gossip.ErrClosed) {
		n.log.Warn().Err(err).Msg("publish key status failed")
	}
}

// nodeKeys is one live node's keyring as its status shows it.
type nodeKeys struct {
	Name    string   `json:"name"`
	Primary string   `json:"primary_key_id"`
	KeyIDs  []string `json:"key_ids"`
	Known   bool     `json:"known"` // false: no status from it (yet)
}

// liveKeyStatus returns the status of every live member, sorted by name.
func (n *Node) liveKeyStatus() []nodeKeys {
	status := map[string]nodeKeys{}
	for _, e := range n.cluster.Entries(kindKeyStatus) {
		if e.Deleted || e.Origin != e.Key {
			continue
		}
		p, ids, err := decodeKeyStatus(e.Value)
		if err != nil {
			continue
		}
		status[e.Key] = nodeKeys{Name: e.Key, Primary: p, KeyIDs: ids, Known: true}
	}
	var out []nodeKeys
	for _, m := range n.cluster.Members() {
		if !live(m) {
			continue
		}
		s, ok := status[m.Name]
		if !ok {
			s = nodeKeys{Name: m.Name}
		}
		out = append(out, s)
	}
	return out
}

// KeyInfo is one key in GET /v1/keys.
type KeyInfo struct {
	// Key is the key in base64, shown to write tokens only (the endpoint
	// wants one) and only for keys this node holds, as `serf keys -list`.
	Key       string   `json:"key,omitempty"`
	KeyID     string   `json:"key_id"`
	HeldBy    int      `json:"held_by"`
	PrimaryOn int      `json:"primary_on"`
	Missing   []string `json:"missing,omitempty"`
}

// KeysAnswer is the answer of GET /v1/keys.
type KeysAnswer struct {
	Nodes   int        `json:"nodes"`
	Keys    []KeyInfo  `json:"keys"`
	Members []nodeKeys `json:"members"`
}

// KeyStepAnswer is the answer of POST /v1/keys.
type KeyStepAnswer struct {
	Op       string   `json:"op"`
	KeyID    string   `json:"key_id"`
	Complete bool     `json:"complete"` // every live node acknowledged
	Acked    []string `json:"acked"`
	Missing  []string `json:"missing"`
	Duration string   `json:"duration"`
}

func (n *Node) handleKeys(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		n.handleListKeys(w)
	case http.MethodPost:
		n.handleKeyStep(w, r)
	default:
		methodNotAllowed(w, "GET, POST")
	}
}

func (n *Node) handleListKeys(w http.ResponseWriter) {
	_, all, err := n.cluster.Keys()
	if err != nil {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	mine := map[string][]byte{}
	for _, k := range all {
		mine[gossip.KeyID(k)] = k
	}
	members := n.liveKeyStatus()
	infos := map[string]*KeyInfo{}
	info := func(id string) *KeyInfo {
		if infos[id] == nil {
			infos[id] = &KeyInfo{KeyID: id}
			if k, ok := mine[id]; ok {
				infos[id].Key = base64.StdEncoding.EncodeToString(k)
			}
		}
		return infos[id]
	}
	for id := range mine {
		info(id)
	}
	for _, m := range members {
		for _, id := range m.KeyIDs {
			info(id).HeldBy++
		}
		if m.Known {
			info(m.Primary).PrimaryOn++
		}
	}
	ans := KeysAnswer{Nodes: len(members), Members: members}
	for _, ki := range infos {
		for _, m := range members {
			if !slices.Contains(m.KeyIDs, ki.KeyID) {
				ki.Missing = append(ki.Missing, m.Name)
			}
		}
		ans.Keys = append(ans.Keys, *ki)
	}
	slices.SortFunc(ans.Keys, func(a, b KeyInfo) int { // the primary first
		return cmp.Or(b.PrimaryOn-a.PrimaryOn, b.HeldBy-a.HeldBy, strings.Compare(a.KeyID, b.KeyID))
	})
	writeJSON(w, http.StatusOK, ans)
}

type keyStepRequest struct {
	Op  string `json:"op"`
	Key string `json:"key"`
}

func (n *Node) handleKeyStep(w http.ResponseWriter, r *http.Request) {
	var req keyStepRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "body must be JSON {\"op\": \"install|use|remove\", \"key\": \"base64\"}")
		return
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "body must hold exactly one JSON object")
		return
	}
	key, err := base64.StdEncoding.DecodeString(req.Key)
	if err == nil {
		err = gossip.ValidateKey(key)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "key: want the base64 of a 16, 24 or 32-byte key")
		return
	}
	if _, _, err := n.cluster.Keys(); err != nil {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	id := gossip.KeyID(key)
	var done func(nodeKeys) bool
	installed := func(s nodeKeys) bool { return slices.Contains(s.KeyIDs, id) }
	switch req.Op {
	case "install":
		if _, all, _ := n.cluster.Keys(); len(all) >= gossip.MaxKeys && !holds(all, key) {
			writeError(w, http.StatusConflict, fmt.Sprintf("the keyring holds %d keys already; remove one first", len(all)))
			return
		}
		_, err = n.cluster.Put(kindKeyIntent, id, append([]byte{intentInstalled}, key...))
		done = installed
	case "use":
		timeout := time.Duration(0) // this node's view as it is
		if _, all, _ := n.cluster.Keys(); holds(all, key) {
			// Installed here: an install through another node completed
			// by that node's view, and this one may hear the last
			// nodes' status a moment later. A script that installs
			// through one node and uses through another must not get a
			// 409 for that.
			timeout = keyViewLag
		}
		lacking := n.waitKeyStep(r.Context(), "install", id, installed, timeout).Missing
		if len(lacking) > 0 {
			writeJSON(w, http.StatusConflict, map[string]any{"error": "key " + id + " is not installed on every live node; install it first", "missing": lacking})
			return
		}
		_, err = n.cluster.Put(kindKeyIntent, id, append([]byte{intentPrimary}, key...))
		done = func(s nodeKeys) bool { return s.Primary == id }
	case "remove":
		var using []string
		for _, s := range n.liveKeyStatus() {
			if s.Primary == id {
				using = append(using, s.Name)
			}
		}
		if p, _, _ := n.cluster.Keys(); gossip.KeyID(p) == id && !slices.Contains(using, n.cfg.Name) {
			using = append(using, n.cfg.Name)
		}
		if len(using) > 0 {
			writeJSON(w, http.StatusConflict, map[string]any{"error": "key " + id + " is the primary key; use another one first", "primary_on": using})
			return
		}
		// The tombstone needs an intent to delete: a key installed at
		// start (--gossip-key) has none yet.
		if _, ok := n.cluster.Get(kindKeyIntent, id); !ok {
			if _, err = n.cluster.Put(kindKeyIntent, id, append([]byte{intentInstalled}, key...)); err != nil {
				break
			}
		}
		_, err = n.cluster.Delete(kindKeyIntent, id)
		done = func(s nodeKeys) bool { return s.Known && !slices.Contains(s.KeyIDs, id) }
	default:
		writeError(w, http.StatusBadRequest, "op: want install, use or remove")
		return
	}
	if errors.Is(err, gossip.ErrClosed) {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	} else if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	start := time.Now()
	n.applyKeyIntents()
	ans := n.waitKeyStep(r.Context(), req.Op, id, done, cmp.Or(n.sec.ackTimeoutForTest, keyAckTimeout))
	ans.Duration = time.Since(start).Round(time.Millisecond).String()
	n.log.Info().Str("op", req.Op).Str("key_id", id).Bool("complete", ans.Complete).
		Strs("missing", ans.Missing).Str("duration", ans.Duration).Msg("gossip key step")
	writeJSON(w, http.StatusOK, ans)
}

// holds reports whether keyring all holds key.
func holds(all [][]byte, key []byte) bool {
	return slices.ContainsFunc(all, func(k []byte) bool { return bytes.Equal(k, key) })
}

// waitKeyStep polls the live nodes' status until all show the step,
// timeout passes or the caller goes away.
func (n *Node) waitKeyStep(ctx context.Context, op, id string, done func(nodeKeys) bool, timeout time.Duration) KeyStepAnswer {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		ans := KeyStepAnswer{Op: op, KeyID: id, Acked: []string{}, Missing: []string{}}
		for _, s := range n.liveKeyStatus() {
			if done(s) {
				ans.Acked = append(ans.Acked, s.Name)
			} else {
				ans.Missing = append(ans.Missing, s.Name)
			}
		}
		ans.Complete = len(ans.Missing) == 0
		if ans.Complete || time.Now().After(deadline) {
			return ans
		}
		select {
		case <-ctx.Done():
			return ans
		case <-tick.C:
		}
	}
}
