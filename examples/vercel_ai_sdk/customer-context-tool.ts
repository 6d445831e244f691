// A Vercel AI SDK tool backed by the customer-context fetch API.
//
//   npm install ai @ai-sdk/openai
//   CUSTOMER_CONTEXT_URL=http://127.0.0.1:8080 CUSTOMER_CONTEXT_KEY=ck_… npx tsx customer-context-tool.ts
//
// The JSON Schema comes from GET /v1/tools (generated from context.yaml and scoped to the key), so the
// enumerated fields always match what the API serves; execution is in context-client.mjs.
import { generateText, jsonSchema, stepCountIs, tool } from "ai";
import { openai } from "@ai-sdk/openai";
import { getCustomerContext, listTools } from "./context-client.mjs";

const options = {
  baseUrl: process.env.CUSTOMER_CONTEXT_URL ?? "http://127.0.0.1:8080",
  apiKey: process.env.CUSTOMER_CONTEXT_KEY ?? "",
};

type ContextArgs = {
  identifier_type: string;
  identifier_value: string;
  fields?: string[];
  sections?: string[];
  format?: "json" | "text";
  max_tokens?: number;
};

export async function customerContextTool() {
  const [definition] = (await listTools(options)).filter(
    (t: { function: { name: string } }) => t.function.name === "get_customer_context",
  );
  return tool({
    description: definition.function.description,
    inputSchema: jsonSchema<ContextArgs>(definition.function.parameters),
    execute: async (args: ContextArgs) => getCustomerContext(args, options),
  });
}

async function main() {
  const { text } = await generateText({
    model: openai("gpt-4o-mini"),
    tools: { get_customer_context: await customerContextTool() },
    stopWhen: stepCountIs(4),
    system: "Look the customer up before answering; ask only for the fields you need.",
    prompt: "(customer: ada@example.com) Can I still return my last order?",
  });
  console.log(text);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main();
}
