// Run once by the mongo image on the first start of an empty data volume
// (/docker-entrypoint-initdb.d, before the replica set and authentication are switched on):
// one MongoDB user per service with readWrite on its own database only, and `backup` (roles
// backup and restore) for `sarafan backup` / `sarafan restore`. Each user's name and password
// come from its connection URL, the compose secret /run/secrets/mongodb_url_<user> that the
// service itself connects with (`sarafan secrets` writes them), so the two cannot disagree and
// no password is in the environment or on a command line. The root user (MONGO_INITDB_ROOT_*)
// is only for this and for the healthcheck's replica-set initiation.
// docs/operations.md, "MongoDB users". tests/ops/test_compose.py checks the list of services.
const fs = require("fs");

const SERVICES = ["members", "engagement", "campaigns", "notifier", "activities"];

function credentials(user) {
  const url = new URL(fs.readFileSync(`/run/secrets/mongodb_url_${user}`, "utf8").trim());
  if (decodeURIComponent(url.username) !== user || !url.password) {
    throw new Error(`mongodb_url_${user} must be mongodb://${user}:<password>@...`);
  }
  return decodeURIComponent(url.password);
}

const admin = db.getSiblingDB("admin");
for (const service of SERVICES) {
  admin.createUser({
    user: service,
    pwd: credentials(service),
    roles: [{ role: "readWrite", db: `sarafan_${service}` }],
  });
  print(`created MongoDB user ${service} (readWrite on sarafan_${service})`);
}
admin.createUser({
  user: "backup",
  pwd: credentials("backup"),
  roles: [
    { role: "backup", db: "admin" },
    { role: "restore", db: "admin" },
  ],
});
print("created MongoDB user backup (backup, restore)");
