// Reads the google.rpc.Status details of failed vmxsim calls from Node.js: the
// grpc-status-details-bin trailer, decoded with protobufjs from googleapis' status.proto and
// error_details.proto (the copies googleapis-common-protos installs in Python, passed by path).
// Usage: node error_details.js HOST:PORT PATH/TO/vmxsim.proto GOOGLEAPIS_PROTO_ROOT
// Prints one JSON object: for each call, its code, message and the decoded details by type.
"use strict";

const protobuf = require("protobufjs");
const path = require("path");
const { connect } = require("./vmxsim");

const [address, protoFile, googleRoot] = process.argv.slice(2);
const service = connect(address, protoFile);

const root = new protobuf.Root();
root.resolvePath = (origin, target) =>
  target.startsWith("google/rpc/") ? path.join(googleRoot, target) : protobuf.util.path.resolve(origin, target);
root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"]);
const Status = root.lookupType("google.rpc.Status");

function failure(method, request) {
  return new Promise((resolve, reject) => {
    service[method](request, { deadline: new Date(Date.now() + 10000) }, (error) => {
      if (!error) return reject(new Error(`${method} succeeded`));
      const [bytes] = error.metadata.get("grpc-status-details-bin");
      const status = Status.decode(bytes);
      const details = {};
      for (const any of status.details) {
        const type = any.type_url.split("/").pop();
        details[type] = root.lookupType(type).toObject(root.lookupType(type).decode(any.value));
      }
      resolve({ code: error.code, status_code: status.code, message: status.message, details });
    });
  });
}

async function main() {
  console.log(
    JSON.stringify({
      not_found: await failure("GetVcpu", { vcpu_id: "vcpu-999999" }),
      invalid_argument: await failure("CreateVcpu", { profile: "no-such-profile" }),
      bad_page_token: await failure("ListVcpus", { page_size: 1, page_token: "nonsense" }),
    }),
  );
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(`error: ${error.code} ${error.details || error.message}`);
    process.exit(1);
  },
);
