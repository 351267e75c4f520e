package dev.qwenedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** Replays tests/golden/tool_calls.json, the cases runtimes/tool_calls.py and the Swift core replay too. */
public class ToolCallsTest {
    static List<Object> cases() throws Exception {
        String text = new String(Files.readAllBytes(GoldenTest.root().resolve("tests/golden/tool_calls.json")),
                StandardCharsets.UTF_8);
        return Json.array(Json.object(Json.parse(text), "golden").get("cases"), "cases");
    }

    @Test
    public void parsesEveryGoldenCaseAsThePythonRuntime() throws Exception {
        List<Object> cases = cases();
        assertTrue("at least a dozen cases", cases.size() >= 12);
        int malformed = 0;
        for (Object item : cases) {
            Map<String, Object> c = Json.object(item, "case");
            String name = (String) c.get("name");
            ToolCalls.Parsed parsed = ToolCalls.parse((String) c.get("output"));
            assertEquals(name, c.get("content"), parsed.content);
            assertEquals(name, c.get("reasoning"), parsed.reasoning);
            List<Object> calls = new ArrayList<>();
            for (ToolCalls.Call call : parsed.calls) {
                Map<String, Object> m = new LinkedHashMap<>();
                m.put("name", call.name);
                m.put("arguments", call.arguments);
                calls.add(m);
            }
            assertEquals(name, c.get("tool_calls"), calls);
            List<Object> errors = new ArrayList<>();
            for (ToolCalls.Error error : parsed.errors) {
                Map<String, Object> m = new LinkedHashMap<>();
                m.put("kind", error.kind);
                m.put("raw", error.raw);
                errors.add(m);
            }
            assertEquals(name, c.get("errors"), errors);
            malformed += errors.isEmpty() ? 0 : 1;
        }
        assertTrue("malformed cases", malformed >= 5);
    }

    @Test
    public void argumentsGoOutAsOneLineOfJson() {
        ToolCalls.Parsed parsed = ToolCalls.parse("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": [1, 2.5]}}"
                + "\n</tool_call>");
        assertEquals(1, parsed.calls.size());
        assertEquals(Map.of("x", List.of(1L, 2.5)), Json.object(Json.parse(parsed.calls.get(0).argumentsJson()), "a"));
    }
}
