package dev.privtune.core.tokenizer;

import java.text.Normalizer;
import java.util.Locale;

/**
 * The text normalisation of the Python tokenizer ({@code tokenizers}' BertNormalizer with
 * clean_text, handle_chinese_chars, strip_accents and lowercase all on), step by step in its order:
 *
 * <ol>
 *   <li>drop control/format/private-use characters, NUL and U+FFFD; turn whitespace into ' ';
 *   <li>surround each CJK ideograph with spaces;
 *   <li>NFD, then drop nonspacing marks (accents);
 *   <li>lower-case each code point on its own (full mapping, no context rules such as final sigma).
 * </ol>
 *
 * <p>The character classes come from {@link BertUnicodeTables} (read off the Python library), so they
 * do not depend on the Unicode version of the JVM or of Android. NFD and lower-casing use the
 * platform; they agree with the Python library for every code point of planes 0-3 and 14 on JDK 17
 * (checked by the golden tests), and can differ only for characters newer than the platform.
 */
public final class BertNormalizer {
    /** Normalises one text (no splitting). */
    public String normalize(String text) {
        StringBuilder cleaned = new StringBuilder(text.length() + 8);
        for (int i = 0; i < text.length(); ) {
            int cp = text.codePointAt(i);
            i += Character.charCount(cp);
            if (BertUnicodeTables.contains(BertUnicodeTables.OTHER, cp)) {
                continue;
            }
            if (cp == ' ' || BertUnicodeTables.contains(BertUnicodeTables.WHITESPACE, cp)) {
                cleaned.append(' ');
            } else if (BertUnicodeTables.contains(BertUnicodeTables.CJK, cp)) {
                cleaned.append(' ').appendCodePoint(cp).append(' ');
            } else {
                cleaned.appendCodePoint(cp);
            }
        }
        String decomposed = Normalizer.normalize(cleaned, Normalizer.Form.NFD);
        StringBuilder out = new StringBuilder(decomposed.length());
        for (int i = 0; i < decomposed.length(); ) {
            int cp = decomposed.codePointAt(i);
            i += Character.charCount(cp);
            if (BertUnicodeTables.contains(BertUnicodeTables.NONSPACING_MARK, cp)) {
                continue;
            }
            if (cp < 0x80) {
                out.append((char) (cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
            } else {
                // per code point, so Java's context-sensitive rules (final sigma) never apply
                out.append(new String(Character.toChars(cp)).toLowerCase(Locale.ROOT));
            }
        }
        return out.toString();
    }
}
