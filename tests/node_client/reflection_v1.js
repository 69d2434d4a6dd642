// A reflection client that speaks only grpc.reflection.v1 (the v1 proto shipped by @grpc/reflection,
// loaded with @grpc/proto-loader): lists the services, then asks for the file that defines
// vmxsim.v1.VcpuService and the one that defines the v1 reflection service itself, and decodes
// them (protobufjs' descriptor extension).
// Usage: node reflection_v1.js HOST:PORT
// Prints {"services": [...], "files": [{"name", "package", "services"}], "rpcs": [...],
// "reflection": {"name", "package"}}.
"use strict";

const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const path = require("path");
const descriptor = require("protobufjs/ext/descriptor");

const [address] = process.argv.slice(2);
const protoRoot = path.join(path.dirname(require.resolve("@grpc/reflection")), "..", "proto");
const definition = protoLoader.loadSync("grpc/reflection/v1/reflection.proto", {
  keepCase: true,
  oneofs: true,
  includeDirs: [protoRoot],
});
const v1 = grpc.loadPackageDefinition(definition).grpc.reflection.v1;
const client = new v1.ServerReflection(address, grpc.credentials.createInsecure());

function ask(requests) {
  return new Promise((resolve, reject) => {
    const answers = [];
    const call = client.ServerReflectionInfo({ deadline: new Date(Date.now() + 10000) });
    call.on("data", (answer) => answers.push(answer));
    call.on("error", reject);
    call.on("end", () => resolve(answers));
    requests.forEach((request) => call.write(request));
    call.end();
  });
}

async function main() {
  const answers = await ask([
    { list_services: "" },
    { file_containing_symbol: "vmxsim.v1.VcpuService" },
    { file_containing_symbol: "grpc.reflection.v1.ServerReflection" },
  ]);
  const failed = answers.filter((answer) => answer.error_response);
  if (failed.length) throw new Error(JSON.stringify(failed));
  const [listed, described, itself] = answers;
  const reflection = descriptor.FileDescriptorProto.decode(
    itself.file_descriptor_response.file_descriptor_proto[0],
  );
  const files = described.file_descriptor_response.file_descriptor_proto.map((bytes) =>
    descriptor.FileDescriptorProto.decode(bytes),
  );
  const vmxsim = files.find((file) => file.package === "vmxsim.v1");
  console.log(
    JSON.stringify({
      services: listed.list_services_response.service.map((service) => service.name),
      files: files.map((file) => ({
        name: file.name,
        package: file.package,
        services: (file.service || []).map((service) => service.name),
      })),
      rpcs: vmxsim.service[0].method.map((method) => method.name),
      reflection: { name: reflection.name, package: reflection.package },
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
