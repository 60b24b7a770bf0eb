package dev.privtune.core.json;

import java.math.BigDecimal;
import java.math.MathContext;
import java.math.RoundingMode;

/**
 * Python's {@code repr(float)}: the shortest decimal that reads back as the same double (closest to
 * it when several are equally short), in Python's layout ({@code 0.0001}, {@code 1e-05},
 * {@code 16.0}, {@code 1e+16}, {@code -0.0}).
 *
 * <p>Canonical JSON is hashed and signed, so a float must print exactly as Python prints it.
 * {@link Double#toString(double)} cannot be used: it prints {@code 1.0E-5} and, before JDK 19 (and
 * on some Android versions), not always the shortest digits.
 */
public final class PyFloat {
    private PyFloat() {}

    /**
     * {@code repr(x)} for a finite double.
     *
     * @throws JsonException for NaN or an infinity (JSON has no form for them)
     */
    public static String repr(double x) {
        if (Double.isNaN(x) || Double.isInfinite(x)) {
            throw new JsonException("Out of range float values are not JSON compliant: " + x);
        }
        if (x == 0.0) {
            return (Double.doubleToRawLongBits(x) < 0) ? "-0.0" : "0.0";
        }
        BigDecimal shortest = shortest(x);
        String digits = shortest.unscaledValue().abs().toString();
        // strip trailing zeros from the digit string (the scale keeps the value)
        int end = digits.length();
        while (end > 1 && digits.charAt(end - 1) == '0') {
            end--;
        }
        int trimmed = digits.length() - end;
        digits = digits.substring(0, end);
        int scale = shortest.scale() - trimmed;
        // value = 0.DIGITS x 10^decpt
        int decpt = digits.length() - scale;
        StringBuilder out = new StringBuilder(32);
        if (x < 0) {
            out.append('-');
        }
        if (decpt <= -4 || decpt > 16) {
            out.append(digits.charAt(0));
            if (digits.length() > 1) {
                out.append('.').append(digits, 1, digits.length());
            }
            int exp = decpt - 1;
            out.append('e').append(exp < 0 ? '-' : '+');
            int abs = Math.abs(exp);
            if (abs < 10) {
                out.append('0');
            }
            out.append(abs);
        } else if (decpt <= 0) {
            out.append("0.");
            for (int i = 0; i < -decpt; i++) {
                out.append('0');
            }
            out.append(digits);
        } else if (decpt >= digits.length()) {
            out.append(digits);
            for (int i = digits.length(); i < decpt; i++) {
                out.append('0');
            }
            out.append(".0");
        } else {
            out.append(digits, 0, decpt).append('.').append(digits, decpt, digits.length());
        }
        return out.toString();
    }

    /** The shortest round-tripping decimal, nearest to x among equally short ones. */
    private static BigDecimal shortest(double x) {
        BigDecimal exact = new BigDecimal(x);
        for (int precision = 1; precision <= 17; precision++) {
            MathContext nearest = new MathContext(precision, RoundingMode.HALF_EVEN);
            BigDecimal candidate = exact.round(nearest);
            if (readsBack(candidate, x)) {
                return candidate;
            }
            // At a power of two the rounding interval is asymmetric: the nearest decimal may miss it
            // while the neighbour on the wide side hits it.
            BigDecimal down = exact.round(new MathContext(precision, RoundingMode.DOWN));
            BigDecimal up = exact.round(new MathContext(precision, RoundingMode.UP));
            boolean downOk = readsBack(down, x);
            boolean upOk = readsBack(up, x);
            if (downOk && upOk) {
                return exact.subtract(down).abs().compareTo(up.subtract(exact).abs()) <= 0 ? down : up;
            }
            if (downOk) {
                return down;
            }
            if (upOk) {
                return up;
            }
        }
        return exact.round(new MathContext(17, RoundingMode.HALF_EVEN)); // unreachable: 17 digits always read back
    }

    private static boolean readsBack(BigDecimal candidate, double x) {
        return Double.parseDouble(candidate.toString()) == x;
    }
}
