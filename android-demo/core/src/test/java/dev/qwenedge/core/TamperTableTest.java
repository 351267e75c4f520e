package dev.qwenedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.Test;

/**
 * tests/golden/tamper.json: the tampering cases and the exact set of problem codes each must produce, shared with
 * the Swift core (TamperTableTests.swift) and the Python verifier (tests/test_tamper_table.py).
 */
public class TamperTableTest {
    static Map<String, Object> table() throws IOException {
        return Json.object(Json.parse(Files.readAllBytes(GoldenTest.root().resolve("tests/golden/tamper.json"))),
                "tamper.json");
    }

    /** A fresh copy of the table's fixture bundle in a new temporary directory (removed by the caller). */
    static Path copyFixture(Map<String, Object> table) throws IOException {
        Path source = GoldenTest.root().resolve(Json.string(table.get("bundle"), "bundle"));
        Path target = Files.createTempDirectory("qwen-edge-tamper").resolve("b");
        Files.createDirectories(target);
        try (Stream<Path> files = Files.list(source)) {
            for (Path p : (Iterable<Path>) files::iterator) {
                Files.copy(p, target.resolve(p.getFileName()));
            }
        }
        return target;
    }

    /** RFC 6901 reference tokens of a pointer ("/a/b~1c" gives a, b/c). */
    static List<String> tokens(String pointer) {
        if (!pointer.startsWith("/")) {
            throw new IllegalArgumentException("pointer " + pointer + " does not start with /");
        }
        List<String> out = new ArrayList<>();
        for (String token : pointer.substring(1).split("/", -1)) {
            out.add(token.replace("~1", "/").replace("~0", "~"));
        }
        return out;
    }

    /** Sets (value != null) or removes the value at `tokens` in place; "-" or the length appends to an array. */
    @SuppressWarnings("unchecked")
    static void apply(Object document, List<String> tokens, Object value, boolean remove) {
        Object parent = document;
        for (String token : tokens.subList(0, tokens.size() - 1)) {
            parent = parent instanceof Map ? ((Map<String, Object>) parent).get(token)
                    : ((List<Object>) parent).get(Integer.parseInt(token));
            if (parent == null) {
                throw new IllegalArgumentException("no " + token + " on the way");
            }
        }
        String last = tokens.get(tokens.size() - 1);
        if (parent instanceof Map) {
            Map<String, Object> object = (Map<String, Object>) parent;
            if (remove) {
                if (!object.containsKey(last)) {
                    throw new IllegalArgumentException("no key " + last + " to remove");
                }
                object.remove(last);
            } else {
                object.put(last, value);
            }
        } else {
            List<Object> list = (List<Object>) parent;
            int index = last.equals("-") ? list.size() : Integer.parseInt(last);
            if (remove) {
                list.remove(index);
            } else if (index == list.size()) {
                list.add(value);
            } else {
                list.set(index, value);
            }
        }
    }

    static void writeDigest(Path bundle) throws IOException {
        String line = BundleVerifier.sha256(Files.readAllBytes(bundle.resolve("manifest.json"))) + "  manifest.json\n";
        Files.write(bundle.resolve("manifest.sha256"), line.getBytes(StandardCharsets.US_ASCII));
    }

    static void run(Map<String, Object> step, Path bundle) throws IOException, InterruptedException {
        String op = Json.string(step.get("op"), "op");
        Path path = step.containsKey("path") ? bundle.resolve(Json.string(step.get("path"), "path")) : null;
        Path manifest = bundle.resolve("manifest.json");
        String text = step.containsKey("text") ? Json.string(step.get("text"), "text") : "";
        switch (op) {
            case "set":
            case "remove": {
                Object document = Json.parse(Files.readAllBytes(manifest));
                apply(document, tokens(Json.string(step.get("pointer"), "pointer")), step.get("value"),
                        op.equals("remove"));
                Files.write(manifest, (Json.write(document, 2) + "\n").getBytes(StandardCharsets.UTF_8));
                if (!Boolean.TRUE.equals(step.get("keep_digest"))) {
                    writeDigest(bundle);
                }
                break;
            }
            case "write_manifest_text":
                Files.write(manifest, text.getBytes(StandardCharsets.UTF_8));
                break;
            case "write":
                Files.write(path, text.getBytes(StandardCharsets.UTF_8));
                break;
            case "append":
                Files.write(path, text.getBytes(StandardCharsets.UTF_8), StandardOpenOption.APPEND);
                break;
            case "delete":
                Files.delete(path);
                break;
            case "symlink":
                Files.createSymbolicLink(path, Paths.get(Json.string(step.get("target"), "target")));
                break;
            case "fifo": {
                Process mkfifo = new ProcessBuilder("mkfifo", path.toString()).inheritIO().start();
                assertEquals("mkfifo " + path, 0, mkfifo.waitFor());
                break;
            }
            case "mkdir":
                Files.createDirectory(path);
                break;
            default:
                throw new IllegalArgumentException("unknown op " + op);
        }
    }

    static void delete(Path dir) throws IOException {
        try (Stream<Path> walk = Files.walk(dir)) {
            for (Path p : walk.sorted(Comparator.reverseOrder()).collect(Collectors.toList())) {
                Files.deleteIfExists(p);
            }
        }
    }

    @Test
    public void theTableNamesExactlyTheCodesThisVerifierReports() throws IOException {
        Set<String> codes = new TreeSet<>();
        for (Problem.Code code : Problem.Code.values()) {
            codes.add(code.id());
        }
        assertEquals(codes, new TreeSet<>(Json.object(table().get("codes"), "codes").keySet()));
    }

    @Test
    public void everyCaseReportsExactlyItsCodes() throws Exception {
        Map<String, Object> table = table();
        List<Object> cases = Json.array(table.get("cases"), "cases");
        assertTrue(cases.size() >= 40);
        List<String> failures = new ArrayList<>();
        for (Object item : cases) {
            Map<String, Object> c = Json.object(item, "case");
            String name = Json.string(c.get("name"), "name");
            Set<String> expect = new TreeSet<>();
            for (Object code : Json.array(c.get("expect"), "expect")) {
                expect.add(Json.string(code, "code"));
            }
            Path bundle = copyFixture(table);
            try {
                for (Object step : Json.array(c.get("steps"), "steps")) {
                    run(Json.object(step, "step"), bundle);
                }
                BundleVerifier.Report report = BundleVerifier.verify(bundle);
                Set<String> got = report.codes().stream().map(Problem.Code::id).collect(Collectors.toCollection(TreeSet::new));
                if (!got.equals(expect)) {
                    failures.add(name + ": expected " + expect + ", got " + got + ": " + report.problems);
                }
                assertEquals(name, expect.isEmpty(), report.ok());
                if (expect.isEmpty()) {
                    assertNotNull(name, report.manifest);
                }
                assertFalse(name, report.problems.stream().anyMatch(p -> p.message.isEmpty()));
            } finally {
                delete(bundle.getParent());
            }
        }
        assertEquals(String.join("\n", failures), List.of(), failures);
    }

    /** The table's temporary copies do not leave links behind that point into the repository. */
    @Test
    public void theFixtureHasOnlyRegularFiles() throws IOException {
        Path fixture = GoldenTest.root().resolve("tests/golden/bundle");
        try (Stream<Path> files = Files.list(fixture)) {
            assertTrue(files.allMatch(p -> Files.isRegularFile(p, LinkOption.NOFOLLOW_LINKS)));
        }
    }
}
