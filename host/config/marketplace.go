package config

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/hcl/v2"
)

var (
	marketplaceSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "listen"},
			{Name: "webhook_secret"},
			{Name: "tls_cert"},
			{Name: "tls_key"},
			{Name: "metrics_listen"},
			{Name: "max_body_size"},
			{Name: "max_connections"},
			{Name: "max_webhooks_in_flight"},
			{Name: "workers"},
			{Name: "queue_size"},
			{Name: "safety_margin"},
			{Name: "max_artifact_size"},
			{Name: "fetch_timeout"},
			{Name: "max_redirects"},
			{Name: "retention"},
			{Name: "record_grace"},
		},
		Blocks: []hcl.BlockHeaderSchema{
			{Type: "bid"},
			{Type: "filter", LabelNames: []string{"action"}},
		},
	}
	bidSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "strategy"},
			{Name: "min_multiplier"},
			{Name: "max_multiplier"},
		},
	}
	filterSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "field"},
			{Name: "op"},
			{Name: "value"},
		},
	}
)

func (d *decoder) decodeMarketplace(b *hcl.Block) *Marketplace {
	m := new(Marketplace)
	*m = DefaultMarketplace()
	m.DefRange = b.DefRange
	content, diags := b.Body.Content(marketplaceSchema)
	d.structural(diags, "marketplace")
	a := content.Attributes

	switch s, st := d.str(a["listen"], "marketplace.listen"); st {
	case absent:
		d.errorf(b.DefRange, "marketplace: missing listen", `Set listen to the address webhooks arrive on, such as "127.0.0.1:8080" or ":8080".`)
	case valid:
		if _, _, ok := d.hostPort(a["listen"].Expr.Range(), "marketplace.listen", s); ok {
			m.Listen = s
		}
	}

	switch s, st := d.str(a["metrics_listen"], "marketplace.metrics_listen"); st {
	case valid:
		if s == "off" {
			m.MetricsListen, m.MetricsListenSet = "off", true
		} else if _, _, ok := d.hostPort(a["metrics_listen"].Expr.Range(), "marketplace.metrics_listen", s); ok {
			m.MetricsListen, m.MetricsListenSet = s, true
		}
	}

	m.WebhookSecrets = d.webhookSecrets(b, a["webhook_secret"])
	m.TLSCert, m.TLSKey = d.tls(a["tls_cert"], a["tls_key"])

	if v, st := d.size(a["max_body_size"], "marketplace.max_body_size", true); st == valid {
		m.MaxBodySize = v
	}
	if v, st := d.integer(a["max_connections"], "marketplace.max_connections", 1); st == valid {
		m.MaxConnections = v
	}
	if v, st := d.integer(a["max_webhooks_in_flight"], "marketplace.max_webhooks_in_flight", 1); st == valid {
		m.MaxWebhooksInFlight = v
	}
	if v, st := d.integer(a["workers"], "marketplace.workers", 1); st == valid {
		m.Workers = v
	}
	if v, st := d.integer(a["queue_size"], "marketplace.queue_size", 1); st == valid {
		m.QueueSize = v
	}
	if v, st := d.duration(a["safety_margin"], "marketplace.safety_margin", true); st == valid {
		m.SafetyMargin = v
	}
	if v, st := d.size(a["max_artifact_size"], "marketplace.max_artifact_size", true); st == valid {
		m.MaxArtifactSize = v
	}
	if v, st := d.duration(a["fetch_timeout"], "marketplace.fetch_timeout", true); st == valid {
		m.FetchTimeout = v
	}
	if v, st := d.integer(a["max_redirects"], "marketplace.max_redirects", 0); st == valid {
		m.MaxRedirects = v
	}
	if v, st := d.duration(a["retention"], "marketplace.retention", true); st == valid {
		m.Retention = v
	}
	if v, st := d.duration(a["record_grace"], "marketplace.record_grace", true); st == valid {
		if v < time.Second {
			// JetStream's per-message TTLs are whole seconds.
			d.errorf(a["record_grace"].Expr.Range(), "marketplace.record_grace: at least 1s", "a record must outlive its bounty's expiration to recognise its redeliveries")
		} else {
			m.RecordGrace = v
		}
	}

	var bid *hcl.Block
	for _, blk := range content.Blocks {
		switch blk.Type {
		case "bid":
			if d.once(blk, bid) {
				bid = blk
				m.Bid = d.decodeBid(blk)
			}
		case "filter":
			if f, ok := d.decodeFilter(blk); ok {
				m.Filters = append(m.Filters, f)
			}
		}
	}
	return m
}

// webhookSecrets reads a secret or a list of them (for rotation). Secrets
// are never echoed in diagnostics.
func (d *decoder) webhookSecrets(b *hcl.Block, attr *hcl.Attribute) []string {
	const name = "marketplace.webhook_secret"
	secrets, st := d.stringList(attr, name)
	switch st {
	case absent:
		d.errorf(b.DefRange, "marketplace: missing webhook_secret",
			`Every delivery is verified with the webhook secret. Set webhook_secret = env("WEBHOOK_SECRET"), or a list ["new", "old"] while rotating.`)
		return nil
	case invalid:
		return nil
	}
	if len(secrets) == 0 {
		d.errorf(attr.Expr.Range(), name+": the list is empty", "Give at least one secret.")
		return nil
	}
	for i, s := range secrets {
		if s == "" {
			what := name + ": the secret is empty"
			if len(secrets) > 1 {
				what = fmt.Sprintf("%s: secret #%d is empty", name, i+1)
			}
			d.errorf(attr.Expr.Range(), what, `An empty secret would make every signature check meaningless. If it comes from env("..."), that variable is unset or empty.`)
			return nil
		}
	}
	return secrets
}

// tls reads tls_cert and tls_key, which come together, and checks that the
// files can be read now rather than when the listener starts.
func (d *decoder) tls(certAttr, keyAttr *hcl.Attribute) (string, string) {
	cert, certSt := d.str(certAttr, "marketplace.tls_cert")
	key, keySt := d.str(keyAttr, "marketplace.tls_key")
	if certSt == invalid || keySt == invalid {
		return "", ""
	}
	switch {
	case certSt == absent && keySt == absent:
		return "", ""
	case keySt == absent:
		d.errorf(certAttr.Expr.Range(), "marketplace.tls_cert: tls_cert needs tls_key", "Set tls_key to the certificate's private key file, or remove tls_cert to serve plain HTTP.")
		return "", ""
	case certSt == absent:
		d.errorf(keyAttr.Expr.Range(), "marketplace.tls_key: tls_key needs tls_cert", "Set tls_cert to the certificate file, or remove tls_key to serve plain HTTP.")
		return "", ""
	}
	ok := d.readable(certAttr, "marketplace.tls_cert", cert)
	ok = d.readable(keyAttr, "marketplace.tls_key", key) && ok
	if !ok {
		return "", ""
	}
	return d.abs(cert), d.abs(key)
}

func (d *decoder) readable(attr *hcl.Attribute, name, p string) bool {
	if p == "" {
		d.errorf(attr.Expr.Range(), name+": must not be empty", "")
		return false
	}
	f, err := os.Open(d.abs(p))
	if err != nil {
		d.errorf(attr.Expr.Range(), name+": cannot read the file", fmt.Errorf("open %s: %w", p, err).Error())
		return false
	}
	f.Close()
	return true
}

func (d *decoder) decodeBid(b *hcl.Block) Bid {
	bid := DefaultBid()
	content, diags := b.Body.Content(bidSchema)
	d.structural(diags, "marketplace.bid")
	a := content.Attributes
	if s, st := oneOf(d, a["strategy"], "marketplace.bid.strategy", bidStrategies...); st == valid {
		bid.Strategy = s
	}
	for _, m := range []struct {
		name string
		dst  *float64
	}{{"min_multiplier", &bid.MinMultiplier}, {"max_multiplier", &bid.MaxMultiplier}} {
		attr := a[m.name]
		if attr == nil {
			continue
		}
		// The named strategies fix their own bounds; a multiplier beside
		// one would be silently ignored, so it is refused.
		if bid.Strategy != BidCustom {
			d.errorf(attr.NameRange, fmt.Sprintf("marketplace.bid.%s: only applies to strategy \"custom\"", m.name),
				fmt.Sprintf("Strategy %q sets its own multipliers. Use strategy = \"custom\" to set them yourself.", bid.Strategy))
			continue
		}
		if v, st := d.positiveFloat(attr, "marketplace.bid."+m.name); st == valid {
			*m.dst = v
		}
	}
	return bid
}

func (d *decoder) decodeFilter(b *hcl.Block) (Filter, bool) {
	f := Filter{Action: FilterAction(b.Labels[0]), Range: b.DefRange}
	where := fmt.Sprintf("marketplace.filter %q", f.Action)
	ok := true
	if !slices.Contains(filterActions, f.Action) {
		d.errorf(b.LabelRanges[0], fmt.Sprintf("marketplace.filter: invalid action %q", f.Action), "Want one of: "+quoteList(filterActions)+".")
		ok = false
	}
	content, diags := b.Body.Content(filterSchema)
	d.structural(diags, where)
	ok = ok && !diags.HasErrors()
	a := content.Attributes

	required := func(name string) (string, bool) {
		s, st := d.str(a[name], join(where, name))
		switch {
		case st == absent:
			d.errorf(b.DefRange, fmt.Sprintf("%s: missing %s", where, name), `A filter needs field, op and value, e.g. field = "mimetype", op = "startswith", value = "image/".`)
		case st == valid && s == "" && name != "value":
			d.errorf(a[name].Expr.Range(), join(where, name)+": must not be empty", "")
		case st == valid:
			return s, true
		}
		return "", false
	}
	var okField, okOp, okValue bool
	f.Field, okField = required("field")
	op, okOp := required("op")
	if f.Op = FilterOp(op); okOp && !slices.Contains(filterOps, f.Op) {
		d.errorf(a["op"].Expr.Range(), fmt.Sprintf("%s: invalid op %q", join(where, "op"), f.Op), "Want one of: "+quoteList(filterOps)+".")
		okOp = false
	}
	f.Value, okValue = required("value")
	if okOp && okValue {
		switch {
		case f.Op == OpRegex:
			if _, err := regexp.Compile(f.Value); err != nil {
				d.errorf(a["value"].Expr.Range(), join(where, "value")+": invalid regular expression", fmt.Errorf("compile %q: %w", f.Value, err).Error()+". The syntax is Go's (RE2).")
				okValue = false
			}
		case f.Op.Ordering():
			// An ordering against a non-number would be false for every
			// bounty, silently; refuse it here instead.
			if _, err := strconv.ParseFloat(f.Value, 64); err != nil {
				d.errorf(a["value"].Expr.Range(), fmt.Sprintf("%s: op %q needs a number, not %q", join(where, "value"), f.Op, f.Value), "")
				okValue = false
			}
		}
	}
	return f, ok && okField && okOp && okValue
}
