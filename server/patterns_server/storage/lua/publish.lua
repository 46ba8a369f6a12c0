-- Publishes a message. From a script so that, like every other command, it goes by its
-- key (to the Cluster node of the server's Pub/Sub connection) in a shared pipeline.
-- KEYS[1]  the Pub/Sub route: a key of the node the hub listens on (never touched)
-- ARGV[1]  the channel
-- ARGV[2]  the payload
-- Reply    how many subscriber connections of that node received it
-- Clock    none
return redis.call('PUBLISH', ARGV[1], ARGV[2])
