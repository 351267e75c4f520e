package dev.qwenedge.core;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/**
 * The file and path rules of `python -m exporter verify` (runtimes/verify.py), applied before the app loads a
 * bundle: manifest parses and has format version 1, every listed file exists with its size and sha256, no
 * extra files, no path leaves the bundle (.., absolute, backslashes, symbolic links), entry points listed.
 */
public final class BundleVerifier {
    public static final String MANIFEST = "manifest.json";

    public static final class Report {
        public final List<String> problems = new ArrayList<>();
        public Manifest manifest;

        public boolean ok() {
            return problems.isEmpty();
        }
    }

    private BundleVerifier() {
    }

    /** Why a manifest file name could leave the bundle, or null (same rule as runtimes.verify.unsafe_path). */
    public static String unsafePath(String name) {
        if (name.isEmpty() || name.indexOf('\\') >= 0 || name.indexOf('\0') >= 0) {
            return "is not a plain relative path";
        }
        if (name.startsWith("/") || name.startsWith("~")) {
            return "is absolute";
        }
        for (String part : name.split("/", -1)) {
            if (part.isEmpty() || part.equals("..") || part.equals(".")) {
                return "leaves the bundle (.. or empty parts)";
            }
        }
        return null;
    }

    public static Report verify(Path bundle) throws IOException {
        Report report = new Report();
        Path manifestPath = bundle.resolve(MANIFEST);
        if (Files.isSymbolicLink(manifestPath)) {
            report.problems.add(MANIFEST + " is a symbolic link");
            return report;
        }
        if (!Files.isRegularFile(manifestPath)) {
            report.problems.add(MANIFEST + " is missing: not a qwen-edge bundle");
            return report;
        }
        Manifest manifest;
        try {
            manifest = Manifest.parse(new String(Files.readAllBytes(manifestPath), StandardCharsets.UTF_8));
        } catch (IllegalArgumentException ex) {
            report.problems.add("manifest: " + ex.getMessage());
            return report;
        }
        report.manifest = manifest;
        Path root = bundle.toRealPath();
        for (var entry : manifest.files.entrySet()) {
            String name = entry.getKey();
            String why = unsafePath(name);
            if (why != null) {
                report.problems.add("file '" + name + "' " + why);
                continue;
            }
            Path path = bundle.resolve(name);
            if (throughSymlink(bundle, name)) {
                report.problems.add(name + " is or passes through a symbolic link");
                continue;
            }
            if (!Files.isRegularFile(path, LinkOption.NOFOLLOW_LINKS)) {
                report.problems.add(name + " is missing");
                continue;
            }
            if (!path.toRealPath().startsWith(root)) {
                report.problems.add(name + " resolves outside the bundle");
                continue;
            }
            long size = Files.size(path);
            if (size != entry.getValue().bytes) {
                report.problems.add(name + " has " + size + " bytes, manifest says " + entry.getValue().bytes);
            } else if (!sha256(path).equals(entry.getValue().sha256)) {
                report.problems.add(name + " does not match its sha256 (changed after export)");
            }
        }
        Set<String> present;
        try (Stream<Path> walk = Files.walk(bundle)) {
            present = walk.filter(p -> !p.equals(bundle))
                    .filter(p -> Files.isRegularFile(p, LinkOption.NOFOLLOW_LINKS) || Files.isSymbolicLink(p))
                    .map(p -> bundle.relativize(p).toString().replace('\\', '/'))
                    .collect(Collectors.toCollection(TreeSet::new));
        }
        for (String rel : present) {
            if (rel.equals(MANIFEST) || manifest.files.containsKey(rel)) {
                continue;
            }
            if (Files.isSymbolicLink(bundle.resolve(rel))) {
                report.problems.add(rel + " is a symbolic link not in the manifest");
            } else {
                report.problems.add(rel + " is not in the manifest (extra file)");
            }
        }
        for (String file : manifest.entryFiles) {
            boolean listed = manifest.files.containsKey(file)
                    || manifest.files.keySet().stream().anyMatch(n -> n.startsWith(file + "/"));
            if (!listed) {
                report.problems.add("entry point names '" + file + "', which the manifest does not list");
            }
        }
        return report;
    }

    private static boolean throughSymlink(Path bundle, String name) {
        Path current = bundle;
        for (String part : name.split("/")) {
            current = current.resolve(part);
            if (Files.isSymbolicLink(current)) {
                return true;
            }
        }
        return false;
    }

    public static String sha256(Path path) throws IOException {
        MessageDigest digest;
        try {
            digest = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException ex) {
            throw new IllegalStateException(ex);
        }
        byte[] buffer = new byte[1 << 16];
        try (InputStream in = Files.newInputStream(path)) {
            int n;
            while ((n = in.read(buffer)) > 0) {
                digest.update(buffer, 0, n);
            }
        }
        StringBuilder hex = new StringBuilder();
        for (byte b : digest.digest()) {
            hex.append(String.format("%02x", b));
        }
        return hex.toString();
    }
}
