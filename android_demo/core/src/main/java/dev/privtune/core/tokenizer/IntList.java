package dev.privtune.core.tokenizer;

import java.util.Arrays;

/** A growable list of ints (token ids) without boxing. */
public final class IntList {
    private int[] values = new int[64];
    private int size;

    /** Appends one value. */
    public void add(int value) {
        if (size == values.length) {
            values = Arrays.copyOf(values, size * 2);
        }
        values[size++] = value;
    }

    /** Number of values. */
    public int size() {
        return size;
    }

    /** Value at {@code index}. */
    public int get(int index) {
        if (index < 0 || index >= size) {
            throw new IndexOutOfBoundsException("index " + index + ", size " + size);
        }
        return values[index];
    }

    /** Drops every value from {@code newSize} on. */
    public void truncate(int newSize) {
        if (newSize < 0 || newSize > size) {
            throw new IndexOutOfBoundsException("new size " + newSize + ", size " + size);
        }
        size = newSize;
    }

    /** A copy of the values. */
    public int[] toArray() {
        return Arrays.copyOf(values, size);
    }
}
