package marketplace

import (
	"fmt"
	"strings"
	"time"
)

// timestampLayouts are the ISO-8601 forms the marketplace (a Python service)
// produces: datetime.isoformat() with or without an offset, with or without
// fractional seconds (Go's parser accepts a fraction after the seconds even
// when the layout has none). Layouts without a zone parse as UTC, which is
// what a naive timestamp means here.
var timestampLayouts = []string{
	"2006-01-02T15:04:05Z07:00",
	"2006-01-02T15:04:05Z0700",
	"2006-01-02T15:04:05Z07",
	"2006-01-02T15:04:05",
	"2006-01-02T15:04Z07:00",
	"2006-01-02T15:04",
}

// ParseTimestamp reads an ISO-8601 timestamp; one without a zone is UTC.
// A space may stand for the T (Python's str(datetime)).
func ParseTimestamp(s string) (time.Time, error) {
	t := strings.TrimSpace(s)
	if len(t) > 10 && (t[10] == ' ' || t[10] == 't') {
		t = t[:10] + "T" + t[11:]
	}
	if strings.HasSuffix(t, "z") {
		t = t[:len(t)-1] + "Z"
	}
	for _, layout := range timestampLayouts {
		if ts, err := time.Parse(layout, t); err == nil {
			return ts.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("not an ISO-8601 timestamp: %q (want e.g. 2026-01-02T15:04:05Z, or a naive 2026-01-02T15:04:05.123456 taken as UTC)", s)
}
