// Package marketplace makes the engine a PolySwarm marketplace participant:
// it receives signed bounty webhooks, stores each bounty durably before
// acknowledging it, scans the artifact with the engine on a bounded worker
// pool, computes the bid, and posts the answer to the bounty's response_url
// before its expiration. Every fault along the way is answered `unknown`
// with bid 0, never benign (docs/architecture.md: the verdict rule, the
// marketplace protocol, a bounty's path).
//
// The pieces, one file each: bounty.go (the webhook body), signature.go,
// server.go (the HTTP side), jetstore.go (the lifecycle in NATS
// JetStream) with record.go (what it stores), horizon.go (which bounties
// the embedded node knows have no record) and migrate.go (moving an
// older version's bounties.db in, read by bountiesdb), fetch.go,
// bid.go, filter.go, answer.go (what is posted), poster.go, worker.go,
// process.go (the pipeline) and instant.go (answers from the verdict
// cache while the webhook waits), metrics.go, and service.go which ties
// them.
package marketplace
