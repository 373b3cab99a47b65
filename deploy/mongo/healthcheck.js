// The mongo container's healthcheck (mongosh --file): signs in as root with the password read
// from its compose secret (never on a command line), initiates the single-node replica set rs0
// on the first start, then reports its health (an exception exits non-zero: unhealthy).
const fs = require("fs");

const password = fs.readFileSync("/run/secrets/mongo_root_password", "utf8").trim();
db.getSiblingDB("admin").auth(process.env.MONGO_INITDB_ROOT_USERNAME, password);
let ok;
try {
  ok = rs.status().ok;
} catch (e) {
  ok = rs.initiate({ _id: "rs0", members: [{ _id: 0, host: "mongo:27017" }] }).ok;
}
if (ok !== 1) {
  throw new Error(`replica set not healthy: ${ok}`);
}
