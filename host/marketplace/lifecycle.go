package marketplace

// The bounty lifecycle, from the webhook to the answer, is kept in NATS
// JetStream (JetStore): the engine's own node, embedded, by default, or
// the cluster of the queue block, shared by its engines. Put is durable
// before it returns, a bounty has one committed answer, and it is finished
// once. A bounties.db left by an engine from before JetStream is moved in
// at start (migrate.go).

// MaxTakes bounds how often a bounty is taken (by any engine, across
// restarts) before it is answered unknown without a scan: a bounty whose
// scan kills the engine every time still gets its answer.
const MaxTakes = 5
