package dev.qwenedge.core;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * The bundle contract of `python -m exporter verify` (runtimes/verify.py), applied before the app loads a
 * bundle; tests/golden/tamper.json holds the cases all three verifiers must agree on. In order:
 * <ol>
 * <li>manifest.json exists and is a regular file (else MANIFEST_MISSING, SYMLINK or NOT_REGULAR; stop);</li>
 * <li>manifest.sha256 holds {@code <sha256 of manifest.json>  manifest.json\n}, and the digest equals the pinned
 * one when the app pins one (else MANIFEST_DIGEST; go on);</li>
 * <li>manifest.json is strict JSON and an object (MANIFEST_INVALID), has format_version 1 (FORMAT_VERSION) and
 * passes the schema (SCHEMA); any of these stops the check: a manifest that is wrong describes no files;</li>
 * <li>every listed file: a safe relative path (UNSAFE_PATH), no symbolic link on the way (SYMLINK), present
 * (MISSING_FILE), a regular file (NOT_REGULAR), its size (SIZE), then its sha256 (SHA256);</li>
 * <li>everything in the bundle: no symbolic link (SYMLINK), no FIFO, socket or device (NOT_REGULAR), no file
 * the manifest does not list besides manifest.json and manifest.sha256 (EXTRA_FILE);</li>
 * <li>every entry point names a listed file or directory (ENTRY_POINT).</li>
 * </ol>
 * Nothing is followed through a symbolic link and nothing but regular files is opened (a FIFO would block).
 */
public final class BundleVerifier {
    public static final String MANIFEST = "manifest.json";
    public static final String DIGEST = "manifest.sha256";

    public static final class Report {
        public final List<Problem> problems = new ArrayList<>();
        public Manifest manifest;

        public boolean ok() {
            return problems.isEmpty();
        }

        public Set<Problem.Code> codes() {
            EnumSet<Problem.Code> codes = EnumSet.noneOf(Problem.Code.class);
            for (Problem p : problems) {
                codes.add(p.code);
            }
            return codes;
        }

        void add(Problem.Code code, String message) {
            problems.add(new Problem(code, message));
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

    /** What is at a path, not following a symbolic link there; null when nothing is. */
    private static BasicFileAttributes stat(Path path) {
        try {
            return Files.readAttributes(path, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
        } catch (IOException ex) {
            return null;
        }
    }

    public static Report verify(Path bundle) throws IOException {
        return verify(bundle, null);
    }

    /** {@code pinnedManifestSha256}: the manifest digest the app expects (64 hex digits), or null. */
    public static Report verify(Path bundle, String pinnedManifestSha256) throws IOException {
        Report report = new Report();
        Path manifestPath = bundle.resolve(MANIFEST);
        BasicFileAttributes attributes = stat(manifestPath);
        if (attributes == null || attributes.isDirectory()) {
            report.add(Problem.Code.MANIFEST_MISSING, MANIFEST + " is missing: not a qwen-edge bundle");
            return report;
        }
        if (attributes.isSymbolicLink()) {
            report.add(Problem.Code.SYMLINK, MANIFEST + " is a symbolic link");
            return report;
        }
        if (!attributes.isRegularFile()) {
            report.add(Problem.Code.NOT_REGULAR, MANIFEST + " is not a regular file");
            return report;
        }
        byte[] data = Files.readAllBytes(manifestPath);
        checkDigest(bundle, data, pinnedManifestSha256, report);
        try {
            report.manifest = Manifest.parse(data);
        } catch (Manifest.Invalid ex) {
            report.add(ex.code, ex.getMessage());
            return report;
        }
        checkFiles(bundle, report.manifest, report);
        return report;
    }

    private static void checkDigest(Path bundle, byte[] manifest, String pinned, Report report) throws IOException {
        String hex = sha256(manifest);
        byte[] expected = (hex + "  " + MANIFEST + "\n").getBytes(StandardCharsets.US_ASCII);
        Path digest = bundle.resolve(DIGEST);
        BasicFileAttributes attributes = stat(digest);
        if (attributes == null) {
            report.add(Problem.Code.MANIFEST_DIGEST, DIGEST + " is missing (it holds " + MANIFEST
                    + "'s sha256, as sha256sum writes it)");
        } else if (!attributes.isRegularFile()) {
            report.add(Problem.Code.MANIFEST_DIGEST, DIGEST + " is not a regular file");
        } else if (attributes.size() != expected.length || !Arrays.equals(Files.readAllBytes(digest), expected)) {
            report.add(Problem.Code.MANIFEST_DIGEST, DIGEST + " does not hold " + MANIFEST + "'s sha256 " + hex
                    + " (" + MANIFEST + " changed after export, or " + DIGEST + " is malformed)");
        }
        if (pinned != null && !pinned.toLowerCase(Locale.ROOT).equals(hex)) {
            report.add(Problem.Code.MANIFEST_DIGEST, MANIFEST + " has sha256 " + hex + ", the app expects " + pinned);
        }
    }

    private static void checkFiles(Path bundle, Manifest manifest, Report report) throws IOException {
        for (Map.Entry<String, Manifest.FileEntry> entry : new TreeMap<>(manifest.files).entrySet()) {
            String name = entry.getKey();
            String why = unsafePath(name);
            if (why != null) {
                report.add(Problem.Code.UNSAFE_PATH, "file '" + name + "' " + why);
                continue;
            }
            if (throughSymlink(bundle, name)) {
                report.add(Problem.Code.SYMLINK, name + " is or passes through a symbolic link (a bundle holds real"
                        + " files only)");
                continue;
            }
            Path path = bundle.resolve(name);
            BasicFileAttributes attributes = stat(path);
            if (attributes == null || attributes.isDirectory()) {
                report.add(Problem.Code.MISSING_FILE, name + " is missing");
            } else if (!attributes.isRegularFile()) {
                report.add(Problem.Code.NOT_REGULAR, name + " is not a regular file (a FIFO, socket or device)");
            } else if (attributes.size() != entry.getValue().bytes) {
                report.add(Problem.Code.SIZE, name + " has " + attributes.size() + " bytes, manifest says "
                        + entry.getValue().bytes);
            } else if (!sha256(path).equals(entry.getValue().sha256)) {
                report.add(Problem.Code.SHA256, name + " does not match its sha256 (changed after export)");
            }
        }
        walk(bundle, "", manifest, report);
        for (String file : manifest.entryFiles) {
            boolean listed = manifest.files.containsKey(file)
                    || manifest.files.keySet().stream().anyMatch(n -> n.startsWith(file + "/"));
            if (!listed) {
                report.add(Problem.Code.ENTRY_POINT, "entry point names '" + file + "', which the manifest does not list");
            }
        }
    }

    /** Everything under the bundle, in name order, not descending through symbolic links. */
    private static void walk(Path bundle, String rel, Manifest manifest, Report report) throws IOException {
        List<String> names = new ArrayList<>();
        try (DirectoryStream<Path> entries = Files.newDirectoryStream(rel.isEmpty() ? bundle : bundle.resolve(rel))) {
            for (Path p : entries) {
                names.add(p.getFileName().toString());
            }
        } catch (NoSuchFileException ex) {
            return;
        }
        names.sort(null);
        for (String name : names) {
            String path = rel.isEmpty() ? name : rel + "/" + name;
            BasicFileAttributes attributes = stat(bundle.resolve(path));
            if (attributes == null) {
                continue;
            }
            if (attributes.isDirectory()) {
                walk(bundle, path, manifest, report);
            } else if (manifest.files.containsKey(path)) {
                continue;  // listed: checked above
            } else if (attributes.isSymbolicLink()) {
                report.add(Problem.Code.SYMLINK, path + " is a symbolic link not in the manifest");
            } else if (!attributes.isRegularFile()) {
                report.add(Problem.Code.NOT_REGULAR, path + " is not a regular file (a FIFO, socket or device)");
            } else if (!path.equals(MANIFEST) && !path.equals(DIGEST)) {
                report.add(Problem.Code.EXTRA_FILE, path + " is not in the manifest (extra file)");
            }
        }
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

    private static MessageDigest newDigest() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException ex) {
            throw new IllegalStateException(ex);
        }
    }

    private static String hex(byte[] digest) {
        StringBuilder hex = new StringBuilder();
        for (byte b : digest) {
            hex.append(String.format("%02x", b));
        }
        return hex.toString();
    }

    public static String sha256(byte[] data) {
        return hex(newDigest().digest(data));
    }

    public static String sha256(Path path) throws IOException {
        MessageDigest digest = newDigest();
        byte[] buffer = new byte[1 << 16];
        try (InputStream in = Files.newInputStream(path)) {
            int n;
            while ((n = in.read(buffer)) > 0) {
                digest.update(buffer, 0, n);
            }
        }
        return hex(digest.digest());
    }
}
