package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/microengine/microengine/host/admin"
	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/marketplace"
	"github.com/microengine/microengine/host/marketplace/bountiesdb"
	"github.com/microengine/microengine/host/queue"
)

// runBounties lists the stored bounties. A running engine holds its
// embedded JetStream node, so it is asked through the admin endpoint;
// otherwise the node is started here to read them (or the cluster of the
// queue block is asked).
func runBounties(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("bounties", stderr, "bounties -config FILE [-json] [-state STATE] [-limit N] [-oldest-first]")
	var cf configFlags
	cf.register(fs)
	dataDir := fs.String("data", "", "data directory of an engine with the embedded JetStream node (default: engine.data_dir of -config)")
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	state := fs.String("state", "", "only bounties in this state: open, answered, expired or failed")
	limit := fs.Int("limit", 0, "print at most N bounties (0: all)")
	oldest := fs.Bool("oldest-first", false, "list in id order from the oldest (default: newest first)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	enc := json.NewEncoder(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	if !*asJSON {
		fmt.Fprintln(tw, "ID\tPHASE\tSTATE\tVERDICT\tBID\tRECEIVED\tFINISHED\tPLUGINS\tREASON")
	}
	n := 0
	show := func(r marketplace.Record) bool {
		if *state != "" && string(r.State) != *state {
			return true
		}
		n++
		if *asJSON {
			_ = enc.Encode(r)
		} else {
			printBounty(tw, r)
		}
		return *limit <= 0 || n < *limit
	}
	err := listBounties(ctx, cf, *dataDir, !*oldest, show, stderr)
	if !*asJSON {
		tw.Flush()
	}
	if err != nil {
		fmt.Fprintf(stderr, "bounties: %v\n", err)
		return 1
	}
	return 0
}

// listBounties asks the running engine when there is one (it holds the
// store's lock), else reads the store directly.
func listBounties(ctx context.Context, cf configFlags, dataDir string, newestFirst bool, fn func(marketplace.Record) bool, stderr io.Writer) error {
	var queueCfg *config.Queue
	if dataDir == "" {
		cfg, ok := cf.load(stderr)
		if !ok {
			return errors.New("cannot read " + cf.path)
		}
		dataDir, queueCfg = cfg.Engine.DataDir, cfg.Queue
		var decodeErr error
		err := admin.NewClient(cfg.Engine.Admin).Bounties(ctx, !newestFirst, func(raw json.RawMessage) bool {
			var r marketplace.Record
			if decodeErr = json.Unmarshal(raw, &r); decodeErr != nil {
				return false
			}
			return fn(r)
		})
		if !errors.Is(err, admin.ErrNotRunning) {
			return errors.Join(err, decodeErr)
		}
	}
	path := filepath.Join(dataDir, bountiesdb.File)
	if _, err := os.Stat(path); err != nil || (queueCfg != nil && !queueCfg.Embedded()) {
		// The lifecycle is in JetStream: the embedded node is started
		// (it fails fast while the engine holds it), a cluster is asked.
		return listQueue(ctx, queueCfg, dataDir, newestFirst, fn)
	}
	// A bounties.db not wholly moved into JetStream yet (an engine of
	// this version moves its open bounties in at start, the rest while it
	// runs): what JetStream holds, then what only the file does. No
	// embedded node is made where none is.
	seen := map[string]bool{}
	more := true
	if _, err := os.Stat(filepath.Join(dataDir, queue.StoreDir)); err == nil {
		err := listQueue(ctx, queueCfg, dataDir, newestFirst, func(r marketplace.Record) bool {
			seen[string(r.Bounty.Key())] = true
			more = fn(r)
			return more
		})
		if err != nil || !more {
			return err
		}
	}
	err := marketplace.ListBountiesDB(path, newestFirst, func(r marketplace.Record) bool {
		return seen[string(r.Bounty.Key())] || fn(r)
	})
	if errors.Is(err, bountiesdb.ErrBusy) {
		return fmt.Errorf("%s is in use by an engine of an older version; stop it, or ask it with its own microengine bounties", path)
	}
	return err
}

func printBounty(w io.Writer, r marketplace.Record) {
	verdict, bid := "-", "-"
	if r.Answer != nil {
		verdict = string(r.Answer.Verdict)
		if r.Answer.Bid != nil {
			bid = r.Answer.Bid.String()
		}
	}
	finished := "-"
	if !r.FinishedAt.IsZero() {
		finished = r.FinishedAt.Local().Format(time.RFC3339)
	}
	var plugins []string
	for _, p := range r.Plugins {
		if p.Supported {
			plugins = append(plugins, p.Name+"@"+p.Version)
		}
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Bounty.IDString(), r.Bounty.Phase, r.State, verdict, bid,
		r.ReceivedAt.Local().Format(time.RFC3339), finished, orDash(strings.Join(plugins, ",")), orDash(oneLine(r.Reason, 80)))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func listQueue(ctx context.Context, q *config.Queue, dataDir string, newestFirst bool, fn func(marketplace.Record) bool) error {
	node, err := queue.Open(ctx, q, dataDir, nil)
	if err != nil {
		if errors.Is(err, queue.ErrBusy) {
			return fmt.Errorf("the bounties in %s are held by a running engine; give -config so it can be asked", dataDir)
		}
		return err
	}
	store, err := marketplace.OpenJetStore(ctx, node, 0, nil)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		node.Close()
		return nil // no bounty stored yet
	}
	if err != nil {
		node.Close()
		return err
	}
	defer store.Close()
	return store.List(newestFirst, fn)
}
