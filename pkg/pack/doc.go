// Package pack turns single requests into vendor batches and back
// (contract v1.1, "Single requests").
//
// Producers publish one item per message on batch.items. The flow has three
// steps, each safe to crash at any point and to run in any number of
// processes:
//
//  1. Route (Packer.Run, every submitter): items are pulled from the
//     BATCH_ITEMS work queue by a shared durable consumer, checked
//     (contract.DecodeItem, the pack's byte and token bounds) and staged on
//     batchfleet.pack.<group> in the BATCHFLEET_PACKS stream, one subject per
//     (provider, endpoint, model). A fetched batch's items of one group go
//     into one stage message, a chunk: their vendor input lines and their
//     sidecar lines, with the custom_ids and token estimates as headers. An
//     item is acknowledged once its chunk is stored. An invalid item gets a
//     failed batch.item.completed and a dead letter on batch.dlq.items.
//  2. Pack (one leader per group, elected with a Redis lock): the leader
//     reads its group's subject in order from the group's checkpoint (a
//     position: a chunk's sequence and an index in it). Each item's
//     custom_id is claimed in Redis (ClaimPrefix, SET NX GET, pipelined per
//     read) with the item's position: the first item of a custom_id wins; a
//     republished or redelivered copy finds the claim and is skipped, a
//     re-read after a crash finds its own position and is kept. A pack
//     closes at PACK_MAX_REQUESTS, at the byte bound, at the model's token
//     budget (ENQUEUED_TOKEN_LIMITS less the tokens already reserved in
//     admission) or PACK_MAX_AGE after its first item's stage time. Closing
//     seals the pack's range [first, end) in the group's state record (a
//     compare-and-set: the record's revision fences a leader that lost its
//     lock); then the input (and an items sidecar of custom_ids and
//     metadata) is written to the batch_intake object store and the pack is
//     published on batch.requests as an ordinary job with input_object,
//     under the key pack-<model>-<group>-<first>, Nats-Msg-Id the key. A
//     leader that finds a sealed pack at start rebuilds the same input from
//     the same range (the claims decide which copies are in) and publishes
//     it again: the job key makes that a no-op when it already went. No
//     item is acknowledged before it is staged, and a staged item belongs to
//     exactly one range, so nothing is lost and nothing packed twice.
//  3. Fan out (Fanout.Run, every notifier): a durable consumer of
//     batch.completed picks the pack jobs' events and publishes one
//     batch.item.completed per item from the streamed merged results,
//     Nats-Msg-Id <custom_id>:item, in chunks whose progress is recorded,
//     so a restart resumes after the last chunk it finished.
//
// A leader's memory does not grow with the pack: item lines go to a
// temporary file until the pack closes, and only counters stay in memory.
package pack
