package dev.privtune.core.net;

import dev.privtune.core.crypto.Digests;
import dev.privtune.core.io.AtomicFiles;
import dev.privtune.core.json.Json;
import dev.privtune.core.json.JsonWriter;
import dev.privtune.core.protocol.ErrorBody;
import dev.privtune.core.protocol.UpdateReceipt;
import java.io.File;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Encoded updates waiting for (or holding) their receipt, one file per round: the same layout as
 * Python's {@code ondevice.upload.Outbox}.
 *
 * <p>{@code round-{id}.update} (the exact bytes to send), {@code round-{id}.receipt.json} once
 * delivered, {@code round-{id}.rejected.json} (the ErrorBody) after a 4xx. Every file is written
 * atomically, so a device killed at any moment never leaves a torn update; the update is stored
 * before the first upload attempt, so a crash never loses it. One process owns a directory.
 */
public final class Outbox {
    private static final Pattern BODY = Pattern.compile("^round-(0|[1-9][0-9]*)\\.update$");
    private final File directory;

    /** Opens (creating) the directory and removes leftover temp files of a killed writer. */
    public Outbox(File directory) throws IOException {
        if (!directory.isDirectory() && !directory.mkdirs() && !directory.isDirectory()) {
            throw new IOException(directory + ": cannot create the outbox directory");
        }
        this.directory = directory;
        File[] leftovers = directory.listFiles();
        if (leftovers != null) {
            for (File f : leftovers) {
                if (f.getName().startsWith(".round-") && f.getName().endsWith(".tmp") && !f.delete()) {
                    throw new IOException(f + ": cannot remove a leftover temp file");
                }
            }
        }
    }

    private File path(long roundId, String suffix) {
        if (roundId < 0) {
            throw new IllegalArgumentException("round_id must be >= 0, found " + roundId);
        }
        return new File(directory, "round-" + roundId + "." + suffix);
    }

    /**
     * Stores {@code body} for the round; the same bytes again is a no-op.
     *
     * @throws OutboxConflictException when the round already holds different bytes
     */
    public synchronized File put(long roundId, byte[] body) throws IOException, OutboxConflictException {
        if (body == null || body.length == 0) {
            throw new IllegalArgumentException("body must be non-empty bytes");
        }
        File path = path(roundId, "update");
        byte[] existing = get(roundId);
        if (existing != null) {
            if (Arrays.equals(existing, body)) {
                return path;
            }
            throw new OutboxConflictException("round " + roundId + " already holds an update (sha256 " + Digests.sha256Hex(existing)
                    + "); refusing different bytes (sha256 " + Digests.sha256Hex(body) + ")");
        }
        AtomicFiles.write(path, body);
        return path;
    }

    /** The stored bytes for the round, or null. */
    public synchronized byte[] get(long roundId) throws IOException {
        return readOrNull(path(roundId, "update"));
    }

    private static byte[] readOrNull(File file) throws IOException {
        try {
            return AtomicFiles.readAll(file);
        } catch (FileNotFoundException e) {
            return null;
        }
    }

    /**
     * Stores the receipt (it must name this round and the stored bytes' sha256).
     *
     * @throws IllegalArgumentException when it does not match the stored update
     * @throws OutboxConflictException when a different receipt is already stored
     */
    public synchronized void markDelivered(long roundId, UpdateReceipt receipt) throws IOException, OutboxConflictException {
        byte[] body = get(roundId);
        if (body == null) {
            throw new IllegalArgumentException("round " + roundId + " has no update in the outbox " + directory);
        }
        String sha = Digests.sha256Hex(body);
        if (receipt.roundId() != roundId || !receipt.updateSha256().equals(sha)) {
            throw new IllegalArgumentException("receipt for round " + receipt.roundId() + " sha256 " + receipt.updateSha256()
                    + " does not match round " + roundId + " sha256 " + sha);
        }
        UpdateReceipt existing = receipt(roundId);
        if (existing != null) {
            if (existing.equals(receipt)) {
                return;
            }
            throw new OutboxConflictException("round " + roundId + " already holds a different receipt: " + existing);
        }
        AtomicFiles.write(path(roundId, "receipt.json"), JsonWriter.canonical(receipt.toMap()).getBytes(StandardCharsets.UTF_8));
        File rejected = path(roundId, "rejected.json");
        if (rejected.exists() && !rejected.delete()) {
            throw new IOException(rejected + ": cannot remove the stale rejection");
        }
    }

    /** The stored receipt, or null while undelivered. */
    public synchronized UpdateReceipt receipt(long roundId) throws IOException {
        byte[] text = readOrNull(path(roundId, "receipt.json"));
        return text == null ? null : UpdateReceipt.fromMap(Json.parse(text));
    }

    /** Records the aggregator's refusal; the bytes stay, the round leaves {@link #pending()}. */
    public synchronized void markRejected(long roundId, ErrorBody error) throws IOException {
        if (get(roundId) == null) {
            throw new IllegalArgumentException("round " + roundId + " has no update in the outbox " + directory);
        }
        AtomicFiles.write(path(roundId, "rejected.json"), JsonWriter.canonical(error.toMap()).getBytes(StandardCharsets.UTF_8));
    }

    /** The stored refusal, or null. */
    public synchronized ErrorBody rejection(long roundId) throws IOException {
        byte[] text = readOrNull(path(roundId, "rejected.json"));
        return text == null ? null : ErrorBody.fromMap(Json.parse(text));
    }

    /** Rounds with an update that is neither delivered nor rejected, ascending. */
    public synchronized List<Long> pending() throws IOException {
        List<Long> rounds = new ArrayList<Long>();
        File[] files = directory.listFiles();
        if (files == null) {
            throw new IOException(directory + ": cannot list the outbox");
        }
        for (File f : files) {
            Matcher m = BODY.matcher(f.getName());
            if (!m.matches()) {
                continue;
            }
            long roundId = Long.parseLong(m.group(1));
            if (receipt(roundId) == null && rejection(roundId) == null) {
                rounds.add(Long.valueOf(roundId));
            }
        }
        Collections.sort(rounds);
        return rounds;
    }

    /** The outbox directory. */
    public File directory() {
        return directory;
    }
}
