// A stdio MCP server on the official TypeScript SDK (from the npm cache Deputy's conformance run installed,
// .cache/conf): the "real npm server" of bench/stdio_first_call.py. One tool, add(a, b).
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = process.env.MCP_SDK_NODE_MODULES ?? path.join(here, "..", ".cache", "conf", "node_modules");
const sdk = (file) => pathToFileURL(path.join(modules, "@modelcontextprotocol", "sdk", "dist", "esm", file)).href;
const { McpServer } = await import(sdk("server/mcp.js"));
const { StdioServerTransport } = await import(sdk("server/stdio.js"));
const require = createRequire(path.join(modules, "x.js"));
const { z } = require("zod");

const server = new McpServer({ name: "node-add", version: "1.0.0" });
server.tool("add", { a: z.number(), b: z.number() }, async ({ a, b }) => ({
  content: [{ type: "text", text: String(a + b) }],
}));
await server.connect(new StdioServerTransport());
