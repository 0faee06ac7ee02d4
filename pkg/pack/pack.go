package pack

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/intake"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/lock"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// BucketPacks holds each group's descriptor ("group.<id>") and state
// ("state.<id>"), and each pack job's fan-out progress ("fanout.<key>").
const BucketPacks = "batch_packs"

// Defaults and bounds.
const (
	// DefaultMaxAge is PACK_MAX_AGE's default.
	DefaultMaxAge = 10 * time.Minute
	// MinMaxAge is the shortest PACK_MAX_AGE.
	MinMaxAge = time.Second
	// byteMargin is kept below the vendor's file limit (the stage lines
	// are exactly the file's lines; the margin covers nothing but leaves
	// room should the vendor count differently).
	byteMargin = 1 << 20
)

// Config tunes packing; zero values take the defaults.
type Config struct {
	// MaxRequests is PACK_MAX_REQUESTS: the most items in one pack.
	// Defaults to (and is capped at) the vendor's bound, 50,000 (100,000
	// for Anthropic).
	MaxRequests int
	// MaxBytes is PACK_MAX_BYTES: the most bytes of one pack's input file.
	// Defaults to (and is capped at) the vendor's file limit less 1 MiB.
	MaxBytes int64
	// MaxAge is PACK_MAX_AGE: a pack closes at the latest this long after
	// its first item was staged. Defaults to 10m; at least 1s.
	MaxAge time.Duration
	// Concurrency is PACK_CONCURRENCY: items each stage loop (four per
	// process) fetches and checks at once. Defaults to 256.
	Concurrency int
	// TokenLimits is ENQUEUED_TOKEN_LIMITS: a model's budget bounds a
	// pack's estimated tokens (less what admission holds reserved for the
	// model when the pack opens, but never below a tenth of the budget).
	TokenLimits map[string]int64
	// LockTTL bounds how long a dead leader keeps its groups. Defaults to 15s.
	LockTTL time.Duration
	// Retention is JOB_RETENTION: how long custom_ids are remembered.
	Retention time.Duration
	// CompletionWindow of the pack jobs. Defaults to 24h.
	CompletionWindow string
	// StopTimeout bounds the graceful stop.
	StopTimeout time.Duration
	Streams     stream.Settings
	Replicas    int
}

func (c Config) withDefaults() Config {
	c.MaxAge = cmp.Or(c.MaxAge, DefaultMaxAge)
	c.Concurrency = cmp.Or(c.Concurrency, 256)
	c.LockTTL = cmp.Or(c.LockTTL, 15*time.Second)
	c.Retention = cmp.Or(c.Retention, 30*24*time.Hour)
	c.CompletionWindow = cmp.Or(c.CompletionWindow, contract.DefaultCompletionWindow)
	c.StopTimeout = cmp.Or(c.StopTimeout, 8*time.Second)
	return c
}

// Validate reports a configuration the packer cannot run with.
func (c Config) Validate() error {
	switch {
	case c.MaxAge != 0 && c.MaxAge < MinMaxAge:
		return fmt.Errorf("PACK_MAX_AGE %s: must be at least %s", c.MaxAge, MinMaxAge)
	case c.MaxRequests < 0:
		return fmt.Errorf("PACK_MAX_REQUESTS %d: must be positive", c.MaxRequests)
	case c.MaxBytes < 0:
		return fmt.Errorf("PACK_MAX_BYTES %d: must be positive", c.MaxBytes)
	}
	return nil
}

// limits are a group's bounds.
type limits struct {
	requests int
	bytes    int64
	tokens   int64 // 0: none
}

func (c Config) limitsFor(g Group) limits {
	maxReq, maxBytes := contract.MaxRequests, int64(intake.MaxBytes)
	if g.Provider == contract.ProviderAnthropic {
		maxReq, maxBytes = contract.MaxAnthropicRequests, int64(intake.MaxAnthropicBytes)
	}
	maxBytes -= byteMargin
	l := limits{requests: maxReq, bytes: maxBytes}
	if c.MaxRequests > 0 {
		l.requests = min(c.MaxRequests, maxReq)
	}
	if c.MaxBytes > 0 {
		l.bytes = min(c.MaxBytes, maxBytes)
	}
	if n, ok := c.TokenLimits[g.Model]; ok {
		l.tokens = n
	} else {
		l.tokens = c.TokenLimits["*"]
	}
	return l
}

// Estimator estimates a request body's input tokens.
type Estimator func(model string, body []byte) int64

// Reserved reports the tokens admission holds for a model's active
// batches (admission.Controller's snapshot).
type Reserved interface {
	ReservedTokens(ctx context.Context, model string) (int64, error)
}

// Deps are a packer's collaborators.
type Deps struct {
	JS     jetstream.JetStream
	Store  *jobstore.Store
	Leader lock.Acquirer
	// Estimate defaults to the byte rule (bytes / 3.5 x 1.1).
	Estimate Estimator
	// Reserved, if set, lowers a pack's token budget by what is reserved.
	Reserved Reserved
	// Redis remembers the items' custom_ids (ClaimPrefix).
	Redis  redis.Cmdable
	Logger zerolog.Logger
	Now    func() time.Time
}

// Packer routes items and leads the groups it wins.
type Packer struct {
	d      Deps
	cfg    Config
	log    zerolog.Logger
	claims claims
	packs  jetstream.KeyValue

	wg      sync.WaitGroup // leadership loops
	mu      sync.Mutex
	known   map[string]bool // groups whose descriptor this process wrote or saw
	ensured map[Group]bool  // groups whose descriptor this process wrote or found
	leads   map[string]bool // groups with a Lead loop in this process
	stats   Stats
	statMu  sync.Mutex
}

// Stats count what a packer did (for tests and benchmarks).
type Stats struct {
	Staged, Rejected, Duplicates, Packed, Packs int64
}

// New opens the buckets and streams the packer uses.
func New(ctx context.Context, d Deps, cfg Config) (*Packer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if d.Redis == nil {
		return nil, errors.New("pack: Deps.Redis is required (it remembers the items' custom_ids)")
	}
	if d.Estimate == nil {
		d.Estimate = ByteEstimate
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	p := &Packer{d: d, cfg: cfg, log: d.Logger.With().Str("role", "packer").Logger(),
		claims: claims{rdb: d.Redis, ttl: cfg.Retention}, known: map[string]bool{}, ensured: map[Group]bool{}, leads: map[string]bool{}}
	if err := stream.Ensure(ctx, d.JS, cfg.Streams, stream.Items, stream.Packs, stream.Requests, stream.Events, stream.DLQ); err != nil {
		return nil, err
	}
	var err error
	if p.packs, err = openPacks(ctx, d.JS, cfg); err != nil {
		return nil, err
	}
	return p, nil
}

func openPacks(ctx context.Context, js jetstream.KeyValueManager, cfg Config) (jetstream.KeyValue, error) {
	packs, err := stream.EnsureKeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: BucketPacks, Description: "pack groups, their packing state and item fan-out progress",
		History: 1, Storage: jetstream.FileStorage, Replicas: max(cfg.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", BucketPacks, err)
	}
	return packs, nil
}

// Stats returns a copy of the counters.
func (p *Packer) Stats() Stats {
	p.statMu.Lock()
	defer p.statMu.Unlock()
	return p.stats
}

func (p *Packer) count(f func(*Stats)) {
	p.statMu.Lock()
	f(&p.stats)
	p.statMu.Unlock()
}

// Run routes items and leads groups until ctx is done.
func (p *Packer) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.route(gctx) })
	g.Go(func() error { return p.watchGroups(gctx) })
	err := g.Wait()
	p.wg.Wait()
	return err
}

// ByteEstimate is the byte rule for models without a tokenizer:
// ceil(len(body) / 3.5 x 1.1).
func ByteEstimate(_ string, body []byte) int64 {
	return (int64(len(body))*11 + 34) / 35
}

// Group is a pack group: items that may share a vendor batch.
type Group struct {
	Provider string `json:"provider"`
	Endpoint string `json:"endpoint"`
	Model    string `json:"model"`
}

// ID is the group's stable identifier (16 hex digits of a SHA-256).
func (g Group) ID() string {
	sum := sha256.Sum256([]byte(g.Provider + "\x00" + g.Endpoint + "\x00" + g.Model))
	return hex.EncodeToString(sum[:8])
}

var slugRE = regexp.MustCompile(`[^A-Za-z0-9.-]+`)

// PackKey is the job key of the group's pack whose first item is the first
// of the stage message with sequence first: pack-<model>-<group id>-<first>.
func (g Group) PackKey(first uint64) string { return g.packKey(pos{Seq: first}) }

// packKey is the job key of the group's pack whose first item is at p:
// pack-<model>-<group id>-<sequence>[-<index>] (the index when it is not
// the stage message's first item).
func (g Group) packKey(p pos) string {
	slug := strings.Trim(slugRE.ReplaceAllString(g.Model, "-"), "-.")
	if len(slug) > 40 {
		slug = slug[:40]
	}
	key := fmt.Sprintf("%s%s-%s-%d", contract.PackKeyPrefix, slug, g.ID(), p.Seq)
	if p.Idx > 0 {
		key += "-" + strconv.Itoa(p.Idx)
	}
	return key
}

func (g Group) subject() string { return stream.SubjectPackPrefix + g.ID() }

// state is a group's packing state ("state.<id>").
type state struct {
	// Next is the position of the first item not in a sealed pack: the
	// stage sequence and the index in its chunk.
	Next      uint64 `json:"next"`
	NextIndex int    `json:"next_index,omitempty"`
	// Sealed is a pack closed but not yet published.
	Sealed *sealed `json:"sealed,omitempty"`
	Packs  int64   `json:"packs"`
}

func (s state) next() pos { return pos{Seq: s.Next, Idx: s.NextIndex} }

// sealed is a closed pack: the items at positions in [First, End) whose
// claim holds their own position.
type sealed struct {
	Key        string `json:"key"`
	First      uint64 `json:"first"`
	FirstIndex int    `json:"first_index,omitempty"`
	End        uint64 `json:"end"`
	EndIndex   int    `json:"end_index,omitempty"`
	// Last is the sequence of the last stage message read into the pack
	// (one that exists: a rebuild reads up to it).
	Last   uint64    `json:"last"`
	Count  int       `json:"count"`
	Bytes  int64     `json:"bytes"`
	Tokens int64     `json:"tokens"`
	At     time.Time `json:"at"`
}

func (s sealed) first() pos { return pos{Seq: s.First, Idx: s.FirstIndex} }
func (s sealed) end() pos   { return pos{Seq: s.End, Idx: s.EndIndex} }

func decodeState(data []byte) (state, error) {
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("decode pack state: %w", err)
	}
	return s, nil
}
