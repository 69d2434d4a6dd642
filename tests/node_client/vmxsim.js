// The vmxsim.v1.VcpuService client every Node script here uses: loaded from the shipped
// vmxsim.proto with uint64 values as exact strings and enums by name.
"use strict";

const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const path = require("path");

function connect(address, protoFile) {
  const definition = protoLoader.loadSync(protoFile, {
    keepCase: true,
    longs: String, // uint64 values stay exact
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [path.resolve(path.dirname(protoFile), "..", "..")],
  });
  const vmxsim = grpc.loadPackageDefinition(definition).vmxsim.v1;
  return new vmxsim.VcpuService(address, grpc.credentials.createInsecure());
}

module.exports = { connect };
