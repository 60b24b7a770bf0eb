package dev.privtune.demo.round;

import dev.privtune.core.device.LocalTrainer;
import java.io.IOException;

/** Opens the local trainer only once a round is known to need it (loading the runtime is costly). */
public interface TrainerFactory {
    /** @throws IOException when the trainer cannot be prepared */
    LocalTrainer open() throws IOException;
}
