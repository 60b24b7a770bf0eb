package dev.privtune.core.io;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.security.SecureRandom;

/**
 * Crash-safe file writes (java.io only; java.nio.file is missing below Android API 26): a unique temp
 * file beside the target, fsync, rename over the target. A reader sees the old file or the complete
 * new one, never a torn write. Same scheme as Python's {@code ondevice.durable.atomic_write_bytes},
 * except that java.io cannot fsync the directory afterwards: the rename is atomic, but whether it
 * survives a power cut right after the call depends on the filesystem's next journal commit.
 */
public final class AtomicFiles {
    private static final SecureRandom RANDOM = new SecureRandom();

    private AtomicFiles() {}

    /** Atomically replaces {@code target} with {@code data}. */
    public static void write(File target, byte[] data) throws IOException {
        File dir = target.getAbsoluteFile().getParentFile();
        if (dir != null && !dir.isDirectory() && !dir.mkdirs() && !dir.isDirectory()) {
            throw new IOException(dir + ": cannot create the directory");
        }
        File tmp = new File(dir, "." + target.getName() + "." + Integer.toHexString(RANDOM.nextInt()) + ".tmp");
        FileOutputStream out = new FileOutputStream(tmp);
        boolean ok = false;
        try {
            out.write(data);
            out.getFD().sync();
            ok = true;
        } finally {
            out.close();
            if (!ok && !tmp.delete()) {
                tmp.deleteOnExit();
            }
        }
        if (!tmp.renameTo(target)) {
            if (!tmp.delete()) {
                tmp.deleteOnExit();
            }
            throw new IOException("cannot rename " + tmp + " to " + target);
        }
    }

    /** The whole content of {@code file}. */
    public static byte[] readAll(File file) throws IOException {
        InputStream in = new FileInputStream(file);
        try {
            return readAll(in);
        } finally {
            in.close();
        }
    }

    /** Everything left in {@code in} (not closed). */
    public static byte[] readAll(InputStream in) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buffer = new byte[1 << 16];
        int n;
        while ((n = in.read(buffer)) > 0) {
            out.write(buffer, 0, n);
        }
        return out.toByteArray();
    }
}
