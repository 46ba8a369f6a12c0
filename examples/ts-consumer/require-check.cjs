// The package's CommonJS entry loads, and it runs on this project's one @grpc/grpc-js (a
// peer dependency: credentials made here are the ones the client's channel accepts).
const assert = require("node:assert");
const patterns = require("@patterns-server/client");
assert.strictEqual(typeof patterns.PatternsClient, "function");
assert.strictEqual(patterns.credentials, require("@grpc/grpc-js").credentials);
